"""The LoadBalancer service (openstack_charms.loadbalancer), and the sandbox's stand-in for Kubernetes."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from openstack_charms import loadbalancer
from openstack_charms.loadbalancer import KubernetesError, LoadBalancer, Port, address_of
from openstack_charms.sandbox.kubernetes import Forward, Kubernetes, real_kubernetes, render_haproxy

RELAY = LoadBalancer("ovn-relay", "openstack", (Port("southbound", 6642),))
UNITS = {"ovn-relay": ["10.42.0.11", "10.42.0.12"]}


def addresses() -> Any:
    numbers = iter(range(1, 100))
    return lambda: f"10.27.5.{next(numbers)}"


@pytest.fixture
def kube() -> Any:
    with real_kubernetes(Kubernetes(addresses(), lambda app: UNITS.get(app, []))) as fake:
        yield fake


# -- the service ---------------------------------------------------------------------------


def test_the_manifest_selects_the_applications_pods_on_its_ports() -> None:
    service = RELAY.manifest()
    assert service.metadata is not None and service.spec is not None
    assert (service.metadata.name, service.metadata.namespace) == ("ovn-relay-lb", "openstack")
    assert service.spec.type == "LoadBalancer"
    assert service.spec.selector == {"app.kubernetes.io/name": "ovn-relay"}
    assert service.spec.ports is not None
    assert [(p.name, p.port, p.targetPort, p.protocol) for p in service.spec.ports] == [
        ("southbound", 6642, 6642, "TCP")
    ]


def test_inputs_change_with_the_manifest_only() -> None:
    same = LoadBalancer("ovn-relay", "openstack", (Port("southbound", 6642),))
    other = LoadBalancer("ovn-relay", "openstack", (Port("southbound", 6642, 16642),))
    assert same.inputs == RELAY.inputs != other.inputs


def test_apply_then_read_the_assigned_address(kube: Kubernetes) -> None:
    assert RELAY.apply() == "10.27.5.1"
    assert RELAY.address() == "10.27.5.1"
    # applied again, the service keeps its address
    assert RELAY.apply() == "10.27.5.1"
    assert kube.calls == [
        ("apply", "openstack/ovn-relay-lb"),
        ("get", "openstack/ovn-relay-lb"),
        ("apply", "openstack/ovn-relay-lb"),
    ]


def test_no_address_until_kubernetes_assigns_one(kube: Kubernetes) -> None:
    kube.assign = False
    assert RELAY.apply() is None
    assert RELAY.address() is None


def test_a_host_name_is_the_address_when_there_is_no_ip() -> None:
    class Ingress:
        ip = None
        hostname = "lb.example.com"

    class Status:
        class loadBalancer:  # noqa: N801 (the API's field name)
            ingress = (Ingress(),)

    class Service:
        status = Status()

    assert address_of(Service()) == "lb.example.com"
    assert address_of(object()) is None


def test_a_refusal_says_it_is_forbidden(kube: Kubernetes) -> None:
    kube.trusted = False
    with pytest.raises(KubernetesError) as refused:
        RELAY.apply()
    assert refused.value.forbidden and refused.value.status == 403
    assert "forbidden" in refused.value.message


def test_deleting_a_service_already_gone_is_no_error(kube: Kubernetes) -> None:
    RELAY.apply()
    RELAY.delete()
    RELAY.delete()
    with pytest.raises(KubernetesError) as missing:
        RELAY.address()
    assert missing.value.status == 404 and not missing.value.forbidden


def test_no_cluster_configuration_is_an_error_without_status(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube import ConfigError

    def unconfigured(field_manager: str) -> Any:
        raise ConfigError("Configuration file ~/.kube/config not found")

    monkeypatch.setattr(loadbalancer, "client", unconfigured)
    with pytest.raises(KubernetesError) as failed:
        RELAY.apply()
    assert failed.value.status is None
    assert "no Kubernetes API configuration" in failed.value.message


def test_the_seam_is_restored_after_real_kubernetes() -> None:
    before = loadbalancer.client
    with real_kubernetes(Kubernetes(addresses(), lambda app: [])) as fake:
        assert loadbalancer.client("ovn-relay") is fake
    assert loadbalancer.client is before


# -- the sandbox's load balancer ---------------------------------------------------------------


def test_haproxy_forwards_each_port_in_tcp_mode_to_every_unit(kube: Kubernetes) -> None:
    RELAY.apply()
    text = kube.render()
    assert "    mode tcp\n" in text and "mode http" not in text
    frontend = text[text.index("frontend ") :]
    assert frontend == (
        "frontend openstack-ovn-relay-lb-southbound\n"
        "    bind 10.27.5.1:6642\n"
        "    default_backend openstack-ovn-relay-lb-southbound\n"
        "backend openstack-ovn-relay-lb-southbound\n"
        "    balance leastconn\n"
        "    server openstack-ovn-relay-lb-southbound-0 10.42.0.11:6642\n"
        "    server openstack-ovn-relay-lb-southbound-1 10.42.0.12:6642\n"
    )


def test_a_service_without_an_address_forwards_nothing(kube: Kubernetes) -> None:
    kube.assign = False
    RELAY.apply()
    assert kube.forwards() == []
    assert "frontend" not in kube.render()


def test_the_target_port_is_where_units_are_reached() -> None:
    forward = Forward("x", "10.27.5.1", 6642, 16642, ("10.42.0.11",))
    text = render_haproxy([forward], pathlib.Path("/state/k.sock"))
    assert "    bind 10.27.5.1:6642\n" in text
    assert "    server x-0 10.42.0.11:16642\n" in text
    assert "    stats socket /state/k.sock mode 600 level admin\n" in text
    # OVSDB clients stay connected for hours
    assert "    timeout client 1h\n" in text


def test_haproxy_is_checked_by_haproxy_itself_when_installed(
    tmp_path: pathlib.Path, kube: Kubernetes
) -> None:
    import shutil
    import subprocess

    haproxy = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    if haproxy is None:
        pytest.skip("haproxy is not installed here")
    RELAY.apply()
    config = tmp_path / "haproxy.cfg"
    config.write_text(kube.render().replace(" bind 10.27.5.1:", " bind 127.0.0.1:"))
    done = subprocess.run([haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

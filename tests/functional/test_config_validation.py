"""Every oslo.config file the charms render is valid for the real OpenStack 2026.1 services.

The charms render in ops.testing with every relation ready (a machine charm on a
fake host); each oslo-style file is then checked by ``oslo_check.py`` run with
the Python of the OpenStack venv (``OPENSTACK_VENV``): option names known to the
service's namespaces (as oslo-config-validator checks them) and every value read
back with its real type. Files one service reads together are checked as one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import subprocess
from collections.abc import Callable
from typing import Any

import ops
import pytest
from openstack_charms.testing import REPO, RelationFixture, charm_context, complete_state, pushed_files
from openstack_charms.testing.host import FakeHost
from openstack_charms.testing.relations import nova_service_fixture
from ops import testing

CHECK = pathlib.Path(__file__).with_name("oslo_check.py")
LINE = re.compile(r"^(error|warning): \[([^\]]+)\] (\S+): (.*)$")


@dataclasses.dataclass(frozen=True)
class Service:
    """Where a charm writes an oslo.config file and what the service reads in it."""

    #: ``None``: a machine charm's file, on its host
    container: str | None
    path: str
    namespaces: tuple[str, ...]
    #: files the service reads after ``path`` (its next ``--config-file``s), the last winning
    read_after: tuple[str, ...] = ()
    #: groups named at run time (glance's stores); the checker still type-checks them
    exclude: tuple[str, ...] = ()
    #: deprecations the service warns about in what the charm renders, and why they stay
    known_warnings: frozenset[tuple[str, str]] = frozenset()

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path, *self.read_after)

    @property
    def id(self) -> str:
        return pathlib.PurePosixPath(self.path).name


#: upstream's config-generator set for nova.conf (nova's etc/nova/nova-config-generator.conf)
NOVA_NAMESPACES = (
    "nova.conf",
    "oslo.log",
    "oslo.messaging",
    "oslo.policy",
    "oslo.privsep",
    "oslo.service.periodic_task",
    "oslo.service.service",
    "oslo.middleware",
    "oslo.concurrency",
    "keystonemiddleware.auth_token",
    "osprofiler",
)

#: every oslo.config file each charm renders, by the service that reads it
SERVICES: dict[str, tuple[Service, ...]] = {
    "keystone-k8s": (
        Service(
            container="keystone",
            path="/etc/keystone/keystone.conf",
            # upstream's config-generator set for keystone.conf
            namespaces=(
                "keystone",
                "oslo.cache",
                "oslo.log",
                "oslo.messaging",
                "oslo.policy",
                "oslo.db",
                "oslo.middleware",
                "osprofiler",
            ),
        ),
    ),
    "glance-k8s": (
        Service(
            container="glance",
            path="/etc/glance/glance-api.conf",
            namespaces=(
                "glance.api",
                "glance.multi_store",
                "glance.store",
                "oslo.concurrency",
                "oslo.db",
                "oslo.log",
                "oslo.messaging",
                "oslo.middleware",
                "oslo.policy",
                "keystonemiddleware.auth_token",
                "osprofiler",
            ),
            exclude=("filestore", "os_glance_staging_store", "os_glance_tasks_store"),
        ),
    ),
    "placement-k8s": (
        Service(
            container="placement",
            path="/etc/placement/placement.conf",
            namespaces=(
                "placement.conf",
                "oslo.log",
                "oslo.db",
                "oslo.policy",
                "oslo.middleware.cors",
                "keystonemiddleware.auth_token",
                "osprofiler",
            ),
        ),
    ),
    # every container gets the same nova.conf
    "nova-k8s": (Service(container="nova-api", path="/etc/nova/nova.conf", namespaces=NOVA_NAMESPACES),),
    "openstack-hypervisor": (
        # as Ubuntu's nova-compute unit reads them
        Service(
            container=None,
            path="/etc/nova/nova.conf",
            read_after=("/etc/nova/nova-compute.conf",),
            # os-vif 5.0.0 lists its plugins' groups ([os_vif_ovs]), which nova-compute registers
            # through os_vif.initialize(), under the entry point name oslo.cache
            namespaces=(*NOVA_NAMESPACES, "oslo.cache"),
        ),
        Service(
            container=None,
            path="/etc/neutron/neutron_ovn_metadata_agent.ini",
            # upstream's config-generator set for the agent (neutron's
            # etc/oslo-config-generator/neutron_ovn_metadata_agent.ini) lacks what the agent
            # registers in code: [ovn] (neutron.agent.ovn.metadata_agent) and [agent]'s root
            # helper (neutron.agent.common.utils)
            namespaces=("neutron.ovn.metadata.agent", "oslo.log", "neutron.ml2.ovn", "neutron.agent"),
        ),
    ),
}

#: nova's metadata API as nova-k8s publishes it, behind its ingress's path (the hypervisor's bridge adds it)
METADATA_URL = "http://10.20.0.10/openstack-nova-metadata"
#: PCI aliases nova offers, so that the hypervisor renders its [pci] section
PCI_ALIASES = json.dumps([{"name": "intel-sr-iov", "product_id": "1563", "vendor_id": "8086"}])

#: relations answered otherwise than complete_state() answers them, by charm and endpoint
RELATIONS: dict[str, dict[str, Callable[[], RelationFixture]]] = {
    "openstack-hypervisor": {
        "nova-service": lambda: nova_service_fixture(metadata_url=METADATA_URL, pci_aliases=PCI_ALIASES),
    },
}

#: options that only appear, or change, away from the defaults
NON_DEFAULT_CONFIG: dict[str, dict[str, str | int | float | bool]] = {
    "keystone-k8s": {
        "debug": True,
        "token-expiration": 7200,
        "allow-expired-window": 86400,
        "fernet-max-active-keys": 6,
        "catalog-cache-expiration": 120,
        "workers": 4,
    },
    "glance-k8s": {
        "debug": True,
        "image-size-cap": "20G",
        "disk-formats": "raw,qcow2",
        "import-methods": "glance-direct",
        "workers": 4,
    },
    "placement-k8s": {
        "debug": True,
        "log-level": "WARNING",
        "randomize-allocation-candidates": True,
        "max-allocation-candidates": 100000,
        "allocation-candidates-generation-strategy": "breadth-first",
        "allocation-conflict-retry-count": 20,
    },
    "nova-k8s": {
        "debug": True,
        "workers": 4,
        "cpu-allocation-ratio": 16.0,
        "ram-allocation-ratio": 1.5,
        "disk-allocation-ratio": 1.0,
        "scheduler-enabled-filters": "ComputeFilter,ImagePropertiesFilter,PciPassthroughFilter",
        "default-availability-zone": "zone-a",
        "console-access": False,
        "pci-aliases": PCI_ALIASES,
    },
    "openstack-hypervisor": {
        "debug": True,
        "virt-type": "qemu",
        "cpu-mode": "custom",
        "cpu-models": "Cascadelake-Server, Skylake-Server",
        "reserved-host-memory-mb": 2048,
        "hostname": "compute-7.maas",
    },
}

#: what NON_DEFAULT_CONFIG shows in each service's files
NON_DEFAULT_LINES: dict[tuple[str, str], tuple[str, ...]] = {
    ("keystone-k8s", "keystone.conf"): ("expiration = 7200",),
    ("glance-k8s", "glance-api.conf"): (f"image_size_cap = {20 * 1024**3}",),
    ("placement-k8s", "placement.conf"): ("allocation_candidates_generation_strategy = breadth-first",),
    ("nova-k8s", "nova.conf"): ("cpu_allocation_ratio = 16.0", "[spice]\nenabled = false\n"),
    ("openstack-hypervisor", "nova.conf"): (
        "host = compute-7.maas",
        "cpu_models = Cascadelake-Server,Skylake-Server",
    ),
    # the agent takes nothing but debug from the charm's options
    ("openstack-hypervisor", "neutron_ovn_metadata_agent.ini"): (),
}

#: files the charms render that oslo.config does not read (libvirtd reads its own at its start,
#: which the functional cloud proves: nova-compute reaches it through the socket it configures)
NOT_OSLO = ("uwsgi.ini", "logging.conf", "paste.ini", "libvirtd.conf")


@dataclasses.dataclass(frozen=True)
class Result:
    """What oslo_check.py said about one file."""

    returncode: int
    stdout: str
    stderr: str

    def lines(self, severity: str) -> set[tuple[str, str]]:
        """(section, option) of each problem of this severity."""
        found = set()
        for line in self.stdout.splitlines():
            match = LINE.match(line)
            if match and match.group(1) == severity:
                found.add((match.group(2), match.group(3)))
        return found


def check(python: pathlib.Path, service: Service, path: pathlib.Path) -> Result:
    argv = [str(python), str(CHECK)]
    argv += [arg for namespace in service.namespaces for arg in ("--namespace", namespace)]
    argv += [arg for group in service.exclude for arg in ("--exclude-group", group)]
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=180, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def python(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


@pytest.fixture
def fake_keystone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keystone's identity provider talks to keystone's API: an in-memory one answers instead."""
    for path in (REPO / "charms" / "keystone-k8s" / "src", REPO / "tests" / "unit" / "keystone"):
        monkeypatch.syspath_prepend(str(path))
    import keystone_api
    from fake_keystone import FakeKeystone

    monkeypatch.setattr(keystone_api, "KeystoneAPI", FakeKeystone())


def render(charm: str, container: str | None, root: pathlib.Path, **kwargs: Any) -> dict[str, str]:
    """Every file the charm writes into a workload container (``None``: on its machine), once active."""
    ctx = charm_context(charm, root=root)
    state = complete_state(charm, root, execs=[testing.Exec([], stdout="")], **kwargs)
    for endpoint, answer in RELATIONS.get(charm, {}).items():
        fixture = answer()
        (replaced,) = (r for r in state.relations if r.endpoint == endpoint)
        assert isinstance(replaced, testing.Relation)
        # the secrets the replaced answer referred to go with it
        secrets = [s for s in state.secrets if s.id not in replaced.remote_app_data.values()]
        relations = [fixture.relation if r is replaced else r for r in state.relations]
        state = dataclasses.replace(state, relations=relations, secrets=[*secrets, *fixture.secrets])
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, ops.ActiveStatus), f"{charm}: {out.unit_status}"
    if container is None:
        return host_files(ctx.host)  # type: ignore[attr-defined]
    return pushed_files(out, ctx, container)


def host_files(host: FakeHost) -> dict[str, str]:
    """Every file the charm wrote on its (fake) machine, by absolute path."""
    return {
        f"/{path.relative_to(host.root)}": path.read_text() for path in host.root.rglob("*") if path.is_file()
    }


def read_as_one(files: dict[str, str], service: Service) -> str:
    """The service's files as it reads them: one after the other."""
    return "\n".join(files[path] for path in service.files)


def oslo_files(files: dict[str, str]) -> dict[str, str]:
    return {
        path: text
        for path, text in files.items()
        if path.startswith("/etc/") and path.endswith((".conf", ".ini")) and not path.endswith(NOT_OSLO)
    }


#: the states rendered: what each adds to complete_state()
CASES: dict[str, Callable[[str], dict[str, Any]]] = {
    "all-relations": lambda charm: {},
    "mandatory-relations": lambda charm: {"mandatory_only": True},
    "non-default-config": lambda charm: {"config": NON_DEFAULT_CONFIG[charm]},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    ("charm", "service"),
    [pytest.param(c, s, id=f"{c}-{s.id}") for c, services in SERVICES.items() for s in services],
)
@pytest.mark.usefixtures("fake_keystone")
def test_rendered_config_is_valid_for_the_service(
    charm: str, service: Service, case: str, python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    files = render(charm, service.container, tmp_path / "charm", **CASES[case](charm))

    # every oslo-style file the charm writes there is one checked here
    checked = {path for s in SERVICES[charm] if s.container == service.container for path in s.files}
    assert set(oslo_files(files)) == checked
    text = read_as_one(files, service)
    conf = tmp_path / service.id
    conf.write_text(text)
    result = check(python, service, conf)

    assert result.returncode == 0, f"{charm} {service.path}:\n{result.stdout}{result.stderr}"
    assert result.lines("error") == set()
    assert result.lines("warning") == service.known_warnings, result.stdout
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"\d+ options checked in \d+ sections", summary), result.stdout
    if case == "non-default-config":
        assert "debug = true" in text
        for line in NON_DEFAULT_LINES[charm, service.id]:
            assert line in text


# -- the checker rejects what the services would reject ---------------------------------


def add_line(text: str, section: str, line: str) -> str:
    header = f"[{section}]\n"
    assert text.count(header) == 1, f"no single {header.strip()} in the rendered file"
    return text.replace(header, f"{header}{line}\n")


def set_value(text: str, option: str, value: str) -> str:
    changed, count = re.subn(rf"^{re.escape(option)} = .*$", f"{option} = {value}", text, count=1, flags=re.M)
    assert count == 1, f"{option} is not in the rendered file"
    return changed


def drop_option(text: str, section: str, option: str) -> str:
    """``text`` without ``option`` of ``section`` (of its first such section)."""
    head, header, body = text.partition(f"\n[{section}]\n")
    assert header, f"no [{section}] in the rendered file"
    body, count = re.subn(rf"^{re.escape(option)} = .*\n", "", body, count=1, flags=re.M)
    assert count == 1, f"no {option} in [{section}]"
    return head + header + body


def add_section(text: str, before: str, section: str, line: str) -> str:
    header = f"[{before}]\n"
    assert text.count(header) == 1, f"no single {header.strip()} in the rendered file"
    return text.replace(header, f"[{section}]\n{line}\n\n{header}")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """A broken edit of a rendered file and the one error it must give."""

    charm: str
    what: str
    edit: Callable[[str], str]
    #: "[section] option" the error names
    where: str
    #: words of the error's message
    words: str
    #: the file (Service.id) of a charm that renders several
    file: str | None = None


MUTATIONS = [
    Mutation(
        "keystone-k8s",
        "unknown option",
        lambda t: add_line(t, "token", "expiraton = 60"),
        "[token] expiraton",
        "unknown",
    ),
    Mutation(
        "keystone-k8s",
        "unknown section",
        lambda t: t + "\n[tokens]\nexpiration = 60\n",
        "[tokens] expiration",
        "unknown",
    ),
    Mutation(
        "keystone-k8s",
        "wrong type",
        lambda t: set_value(t, "expiration", "soon"),
        "[token] expiration",
        "invalid value 'soon'",
    ),
    Mutation(
        "keystone-k8s",
        "wrong boolean",
        lambda t: set_value(t, "debug", "maybe"),
        "[DEFAULT] debug",
        "invalid value 'maybe'",
    ),
    Mutation(
        "keystone-k8s",
        "not a choice",
        lambda t: add_line(t, "identity", "password_hash_algorithm = md5"),
        "[identity] password_hash_algorithm",
        "invalid value 'md5'",
    ),
    Mutation(
        "glance-k8s",
        "unknown option",
        lambda t: add_line(t, "DEFAULT", "no_such_option = 1"),
        "[DEFAULT] no_such_option",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "bad port",
        lambda t: add_line(t, "DEFAULT", "bind_port = 70000"),
        "[DEFAULT] bind_port",
        "invalid value '70000'",
    ),
    Mutation(
        "glance-k8s",
        "wrong type in a store group",
        lambda t: add_line(t, "filestore", "filesystem_store_chunk_size = big"),
        "[filestore] filesystem_store_chunk_size",
        "invalid value 'big'",
    ),
    Mutation(
        "glance-k8s",
        "unknown option in a store group",
        lambda t: add_line(t, "os_glance_staging_store", "filesystem_store_dir = /x"),
        "[os_glance_staging_store] filesystem_store_dir",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "unknown auth plugin option",
        lambda t: add_line(t, "keystone_authtoken", "usernme = glance"),
        "[keystone_authtoken] usernme",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "option set twice",
        lambda t: add_line(t, "paste_deploy", "flavor = keystone+cachemanagement"),
        "[paste_deploy] flavor",
        "set 2 times",
    ),
    Mutation(
        "placement-k8s",
        "wrong type",
        lambda t: set_value(t, "max_allocation_candidates", "lots"),
        "[placement] max_allocation_candidates",
        "invalid value 'lots'",
    ),
    Mutation(
        "placement-k8s",
        "not a choice",
        lambda t: set_value(t, "allocation_candidates_generation_strategy", "random"),
        "[placement] allocation_candidates_generation_strategy",
        "invalid value 'random'",
    ),
    Mutation(
        "placement-k8s",
        "required option missing",
        lambda t: re.sub(r"^connection = .*\n", "", t, flags=re.M),
        "[placement_database] connection",
        "required",
    ),
    Mutation(
        "nova-k8s",
        "unknown option",
        lambda t: add_line(t, "spice", "html5proxy_url = http://10.20.1.10/"),
        "[spice] html5proxy_url",
        "unknown",
    ),
    Mutation(
        "nova-k8s",
        "wrong type",
        lambda t: set_value(t, "discover_hosts_in_cells_interval", "often"),
        "[scheduler] discover_hosts_in_cells_interval",
        "invalid value 'often'",
    ),
    Mutation(
        "nova-k8s",
        "auth plugin option missing",
        lambda t: drop_option(t, "placement", "auth_url"),
        "[placement] auth_url",
        "required by auth_type password",
    ),
    Mutation(
        "openstack-hypervisor",
        "not a choice",
        lambda t: set_value(t, "virt_type", "xen"),
        "[libvirt] virt_type",
        "invalid value 'xen'",
        file="nova.conf",
    ),
    Mutation(
        "openstack-hypervisor",
        "option in both files of nova-compute",
        lambda t: add_section(t, "os_vif_ovs", "libvirt", "virt_type = qemu"),
        "[libvirt] virt_type",
        "set 2 times",
        file="nova.conf",
    ),
    Mutation(
        "openstack-hypervisor",
        "wrong type in a group of os-vif",
        lambda t: add_line(t, "os_vif_ovs", "isolate_vif = sometimes"),
        "[os_vif_ovs] isolate_vif",
        "invalid value 'sometimes'",
        file="nova.conf",
    ),
    Mutation(
        "openstack-hypervisor",
        "bad port",
        lambda t: set_value(t, "nova_metadata_port", "87750"),
        "[DEFAULT] nova_metadata_port",
        "invalid value '87750'",
        file="neutron_ovn_metadata_agent.ini",
    ),
    Mutation(
        "openstack-hypervisor",
        "unknown option of the agent",
        lambda t: add_line(t, "ovn", "ovn_sb_conection = tcp:10.27.5.1:6642"),
        "[ovn] ovn_sb_conection",
        "unknown",
        file="neutron_ovn_metadata_agent.ini",
    ),
]


@pytest.mark.parametrize(
    "mutation", [pytest.param(m, id=f"{m.charm}-{m.what.replace(' ', '-')}") for m in MUTATIONS]
)
@pytest.mark.usefixtures("fake_keystone")
def test_the_check_rejects_a_broken_file_naming_the_option(
    mutation: Mutation, python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    service = next(s for s in SERVICES[mutation.charm] if mutation.file in (None, s.id))
    rendered = read_as_one(render(mutation.charm, service.container, tmp_path / "charm"), service)
    conf = tmp_path / service.id
    conf.write_text(mutation.edit(rendered))

    result = check(python, service, conf)

    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"only the broken option is reported:\n{result.stdout}"
    assert errors[0].startswith(f"error: {mutation.where}: "), errors[0]
    assert mutation.words in errors[0], errors[0]
    assert "options checked" not in result.stdout


def test_an_unknown_namespace_is_an_error_not_a_silent_pass(
    python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    conf = tmp_path / "any.conf"
    conf.write_text("[DEFAULT]\ndebug = true\n")
    service = Service(container="none", path="/none", namespaces=("oslo.log", "oslo.lgo"))

    result = check(python, service, conf)

    assert result.returncode == 1
    assert "unknown namespace 'oslo.lgo'" in result.stdout

"""The Kubernetes API as our charms use it, stood in: Services, LoadBalancer ones forwarded by HAProxy.

A charm reaches Kubernetes only through :func:`openstack_charms.loadbalancer.client`;
:func:`real_kubernetes` makes that return a :class:`Kubernetes`, which keeps
the Services applied to it and gives each LoadBalancer service an address
(from the callable it is given) reported in ``status.loadBalancer.ingress``.
With a state directory it also runs HAProxy in TCP mode (the ingress stand-in's
machinery, :class:`~.providers.Ingress`), forwarding each port of the address
to the same port (``targetPort``) of every unit of the selected application;
without one it only keeps and answers, which is what ops.testing runs need.

What it cannot do that Kubernetes does:

- only Services, and only apply, get and delete: no other kind, no list or
  watch, no field ownership (server-side apply replaces the whole object), no
  ``resourceVersion``; a selector is read only for its application label;
- the backends are the units the callable names when a service is applied or
  read, not a live Endpoints object: a unit added later is behind the address
  from the next call (the charm's next hook) on;
- HAProxy checks that a unit accepts TCP connections; Kubernetes sends only to
  pods whose readiness probe passes (for Juju's pods, those whose charm
  container is up), whatever the workload does;
- one HAProxy forwards every service; ``externalTrafficPolicy``, session
  affinity, node ports and UDP are not modelled.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from .. import loadbalancer
from ..loadbalancer import APP_LABEL

if TYPE_CHECKING:
    from .containers import Machine
    from .providers import Ingress

#: what stands in for Kubernetes' LoadBalancer services, said at ``up``
LIMITS = {
    "kubernetes": "Services only (apply, get, delete); a LoadBalancer service is HAProxy in TCP mode on an"
    " address of the sandbox's bridge, its backends the units as they were at the charm's last call",
}


@dataclasses.dataclass(frozen=True)
class Forward:
    """One port of a LoadBalancer service: ``address:port`` to ``target_port`` of each backend."""

    name: str
    address: str
    port: int
    target_port: int
    backends: tuple[str, ...]


def render_haproxy(forwards: list[Forward], stats_socket: pathlib.Path | None = None) -> str:
    """HAProxy's configuration: a TCP frontend per forwarded port, every backend address behind it."""
    lines = ["global", "    log stdout format raw local0"]
    if stats_socket is not None:
        lines.append(f"    stats socket {stats_socket} mode 600 level admin")
    lines += [
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 5s",
        # OVSDB and AMQP connections stay open for hours, quiet between their own keepalives
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 5s",
        "    default-server check inter 1s fall 2 rise 1",
    ]
    for forward in sorted(forwards, key=lambda f: f.name):
        lines += [
            f"frontend {forward.name}",
            f"    bind {forward.address}:{forward.port}",
            f"    default_backend {forward.name}",
            f"backend {forward.name}",
            # long-lived connections: spread by how many each backend holds, not in turn
            "    balance leastconn",
        ]
        for n, backend in enumerate(forward.backends):
            lines.append(f"    server {forward.name}-{n} {backend}:{forward.target_port}")
    return "\n".join(lines) + "\n"


def _api_error(code: int, reason: str, message: str) -> Exception:
    from lightkube import ApiError
    from lightkube.models.meta_v1 import Status

    return ApiError(status=Status(code=code, reason=reason, message=message, status="Failure"))


class Kubernetes:
    """Services applied by the charms, each LoadBalancer one given an address and (with ``state``) forwarded.

    ``address()`` picks a new address for a LoadBalancer service (kept for as
    long as the service exists); ``units(app)`` gives the addresses of the
    application's pods. With ``state``, HAProxy runs (and ``address()`` is
    called) in the network namespace this object is made in, whichever
    unit's hook calls: make it where the ingress stand-in is made.

    ``trusted=False`` refuses every call with 403, as the API refuses a charm
    deployed without ``--trust``; ``assign=False`` keeps every LoadBalancer
    service without an address, as a cluster without a load-balancer
    implementation does.
    """

    def __init__(
        self,
        address: Callable[[], str],
        units: Callable[[str], list[str]],
        *,
        state: pathlib.Path | None = None,
        logs: pathlib.Path | None = None,
        trusted: bool = True,
        assign: bool = True,
    ) -> None:
        self._address = address
        self._units = units
        self.trusted = trusted
        self.assign = assign
        #: (namespace, name) -> the service as the API server holds it (a plain manifest)
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        #: every call made, as (verb, namespace/name), for tests that count them
        self.calls: list[tuple[str, str]] = []
        self._haproxy: Ingress | None = None
        #: the network namespace it was made in, where addresses are added and HAProxy runs
        self._home_network: int | None = None
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
            self._haproxy = _forwarder(state, logs or state, self.render)
            # a charm calls from its hook, with its thread in the unit's pod network
            self._home_network = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    # -- what lightkube.Client offers ------------------------------------------------

    def apply(self, obj: Any, name: str | None = None, *, namespace: str | None = None, **_: Any) -> Any:
        manifest = obj.to_dict() if hasattr(obj, "to_dict") else copy.deepcopy(obj)
        metadata = manifest.setdefault("metadata", {})
        key = (namespace or metadata.get("namespace") or "default", name or metadata["name"])
        self._called("apply", key)
        if manifest.get("kind", "Service") != "Service":
            raise _api_error(
                422, "Invalid", f"the sandbox's Kubernetes keeps Services only, not {manifest['kind']}"
            )
        metadata["namespace"] = key[0]
        spec = manifest.setdefault("spec", {})
        old = self.services.get(key, {})
        status: dict[str, Any] = {}
        if spec.get("type") == "LoadBalancer" and self.assign:
            # an address, once given, stays the service's for as long as it exists
            ingress = old.get("status", {}).get("loadBalancer", {}).get("ingress") or [
                {"ip": self._address()}
            ]
            status = {"loadBalancer": {"ingress": ingress}}
        manifest["status"] = status
        self.services[key] = manifest
        self.forward()
        return self._object(manifest)

    def get(self, res: Any, name: str, *, namespace: str | None = None) -> Any:
        key = (namespace or "default", name)
        self._called("get", key)
        if key not in self.services:
            raise _api_error(404, "NotFound", f'services "{name}" not found')
        # a pod that came or went since is behind the address from now on
        self.forward()
        return self._object(self.services[key])

    def delete(self, res: Any, name: str, *, namespace: str | None = None, **_: Any) -> None:
        key = (namespace or "default", name)
        self._called("delete", key)
        if self.services.pop(key, None) is None:
            raise _api_error(404, "NotFound", f'services "{name}" not found')
        self.forward()

    # -- the load balancer -----------------------------------------------------------

    def forwards(self) -> list[Forward]:
        """What every LoadBalancer service with an address forwards, to the units as they are now."""
        forwards = []
        for (namespace, name), service in sorted(self.services.items()):
            ingress = service.get("status", {}).get("loadBalancer", {}).get("ingress") or []
            if not ingress:
                continue
            app = (service["spec"].get("selector") or {}).get(APP_LABEL, "")
            backends = tuple(self._units(app)) if app else ()
            for port in service["spec"].get("ports") or []:
                forwards.append(
                    Forward(
                        f"{namespace}-{name}-{port.get('name') or port['port']}",
                        ingress[0].get("ip") or ingress[0]["hostname"],
                        int(port["port"]),
                        int(port.get("targetPort") or port["port"]),
                        backends,
                    )
                )
        return forwards

    def render(self) -> str:
        """HAProxy's configuration for the services as they are now."""
        return render_haproxy(self.forwards(), self._haproxy.stats_socket if self._haproxy else None)

    def forward(self) -> None:
        """With HAProxy: render, and restart it when the configuration changed."""
        haproxy = self._haproxy
        if haproxy is None:
            return
        forwards = self.forwards()
        if not forwards:
            haproxy.stop()
            return
        text = self.render()
        if haproxy.process is not None and haproxy.config.exists() and haproxy.config.read_text() == text:
            return
        haproxy.routes = {}
        from .providers import Route

        for f in forwards:
            # Ingress.restart waits until each of its routes' address and port accepts connections
            haproxy.routes[f.name] = Route("", f.address, f.port, f.target_port, "tcp", "kubernetes")
        with self._at_home():
            haproxy.restart()

    def close(self) -> None:
        """Stop HAProxy (the addresses are the ``address`` callable's to take back)."""
        if self._haproxy is not None:
            self._haproxy.close()
        if self._home_network is not None:
            os.close(self._home_network)
            self._home_network = None

    @contextlib.contextmanager
    def _at_home(self) -> Iterator[None]:
        """The calling thread in the network namespace this was made in, for as long as the block runs."""
        if self._home_network is None:
            yield
            return
        from .network import _setns

        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self._home_network)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    # -- helpers -----------------------------------------------------------------------

    def _called(self, verb: str, key: tuple[str, str]) -> None:
        self.calls.append((verb, f"{key[0]}/{key[1]}"))
        if not self.trusted:
            raise _api_error(
                403,
                "Forbidden",
                f'services "{key[1]}" is forbidden: User "system:serviceaccount:{key[0]}:{key[1]}"'
                f' cannot {verb} resource "services" in API group "" in the namespace "{key[0]}"',
            )

    @staticmethod
    def _object(manifest: dict[str, Any]) -> Any:
        from lightkube.resources.core_v1 import Service

        return Service.from_dict(copy.deepcopy(manifest))


def _forwarder(state: pathlib.Path, logs: pathlib.Path, render: Callable[[], str]) -> Ingress:
    """The ingress stand-in's HAProxy machinery (start, wait until listening, stop) rendering ``render()``."""
    from .providers import Ingress

    class Forwarder(Ingress):
        def render(self) -> str:
            return render()

    # the machine is only ever read by Ingress.render, which this class replaces
    forwarder = Forwarder(cast("Machine", None), state, logs)
    forwarder.config = state / "haproxy.cfg"
    # a unix socket's path has at most 107 bytes, HAProxy's temporary name for it included
    forwarder.stats_socket = state / "haproxy.sock"
    forwarder.log = logs / "kubernetes-haproxy.log"
    return forwarder


@contextlib.contextmanager
def real_kubernetes(kubernetes: Kubernetes) -> Iterator[Kubernetes]:
    """Make every charm's Kubernetes client (``loadbalancer.client``) be ``kubernetes`` for a while."""
    saved = loadbalancer.client

    def client(field_manager: str) -> loadbalancer.KubernetesClient:
        return kubernetes

    loadbalancer.client = client
    try:
        yield kubernetes
    finally:
        loadbalancer.client = saved

"""A Kubernetes LoadBalancer service in front of an application's pods, for clients outside the cluster.

Juju gives a sidecar application a ClusterIP service of its own, which Juju
owns and may rewrite: rather than patching it, the charm applies a second
Service, ``<app>-lb``, of type LoadBalancer, selecting the application's pods
by the label Juju gives them (``app.kubernetes.io/name``). It is written with
server-side apply under the application's name as field manager, so applying
it again is harmless and another manager's fields are left alone; the address
the cluster's load-balancer implementation (MetalLB, a cloud's) assigns shows
in its status.

The charm needs ``juju trust <app> --scope=cluster`` (or ``juju deploy
--trust``): without it the API refuses (403), which :class:`KubernetesError`
says with :attr:`~KubernetesError.forbidden`.

Every call to the Kubernetes API goes through :func:`client`, the one seam
the unit tests and the sandbox (``sandbox.kubernetes.real_kubernetes``)
replace; it is looked up at each call (``loadbalancer.client(...)``), never
imported by name. lightkube is imported only there and when a manifest is
built, so a hook that does not reach Kubernetes does not pay for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from lightkube.resources.core_v1 import Service

#: the label Juju puts on every pod of an application
APP_LABEL = "app.kubernetes.io/name"


class KubernetesError(Exception):
    """The Kubernetes API refused or could not be reached; ``status`` is the HTTP code when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def forbidden(self) -> bool:
        """Whether the charm lacks the right: it was deployed without ``--trust``."""
        return self.status in (401, 403)


class KubernetesClient(Protocol):
    """What the charms use of ``lightkube.Client``: server-side apply, get and delete of one object."""

    def apply(self, obj: Any, *, force: bool = False) -> Any:
        """Server-side apply ``obj`` (its own namespace); the object as the API server holds it afterwards."""
        ...

    def get(self, res: Any, name: str, *, namespace: str | None = None) -> Any:
        """The object ``name`` of kind ``res``; ``ApiError`` (404) when there is none."""
        ...

    def delete(self, res: Any, name: str, *, namespace: str | None = None) -> None:
        """Delete the object ``name`` of kind ``res``; ``ApiError`` (404) when there is none."""
        ...


def client(field_manager: str) -> KubernetesClient:
    """The Kubernetes API client every call goes through (in-cluster config, the pod's service account).

    This is the seam: tests and the sandbox replace this function, so no other
    code creates a client.
    """
    import lightkube

    return lightkube.Client(field_manager=field_manager)


@dataclasses.dataclass(frozen=True)
class Port:
    """One port of the service: ``port`` outside, ``target_port`` on the pods (the same by default)."""

    name: str
    port: int
    target_port: int | None = None
    protocol: str = "TCP"

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "targetPort": self.target_port or self.port,
            "protocol": self.protocol,
        }


@dataclasses.dataclass(frozen=True)
class LoadBalancer:
    """The LoadBalancer service of application ``app`` in namespace ``namespace`` (the model)."""

    app: str
    namespace: str
    ports: tuple[Port, ...]

    @property
    def name(self) -> str:
        """The service's name: ``<app>-lb`` (Juju's own service is ``<app>``)."""
        return f"{self.app}-lb"

    @property
    def selector(self) -> Mapping[str, str]:
        """Every pod of the application."""
        return {APP_LABEL: self.app}

    def desired(self) -> dict[str, Any]:
        """The service as a plain manifest (what is applied, and what :attr:`inputs` digests)."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {APP_LABEL: self.app, "app.kubernetes.io/managed-by": self.app},
            },
            "spec": {
                "type": "LoadBalancer",
                "selector": dict(self.selector),
                "ports": [p.spec() for p in self.ports],
            },
        }

    @property
    def inputs(self) -> str:
        """A digest of the manifest: the service needs applying again only when it changes."""
        text = json.dumps(self.desired(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def manifest(self) -> Service:
        """The manifest as lightkube's ``Service``."""
        from lightkube.resources.core_v1 import Service

        return cast("Service", Service.from_dict(self.desired()))

    def apply(self) -> str | None:
        """Apply the service; the address it has already (``None`` until Kubernetes assigns one)."""
        return address_of(self._call("apply", lambda api: api.apply(self.manifest(), force=True)))

    def address(self) -> str | None:
        """The address Kubernetes assigned the service, or ``None`` while it has none."""
        from lightkube.resources.core_v1 import Service

        return address_of(
            self._call("get", lambda api: api.get(Service, self.name, namespace=self.namespace))
        )

    def delete(self) -> None:
        """Delete the service; one already gone is no error."""
        from lightkube.resources.core_v1 import Service

        try:
            self._call("delete", lambda api: api.delete(Service, self.name, namespace=self.namespace))
        except KubernetesError as e:
            if e.status != 404:
                raise

    def _call(self, what: str, call: Any) -> Any:
        import httpx2
        from lightkube import ApiError, ConfigError

        try:
            return call(client(self.app))
        except ApiError as e:
            status = e.status
            raise KubernetesError(f"{what} service {self.name}: {status.message}", status.code) from None
        except ConfigError as e:
            raise KubernetesError(
                f"{what} service {self.name}: no Kubernetes API configuration: {e}"
            ) from None
        except httpx2.HTTPError as e:
            raise KubernetesError(f"{what} service {self.name}: {e}") from None


def address_of(service: Any) -> str | None:
    """``status.loadBalancer.ingress[0]``'s IP, else its host name; ``None`` while there is none."""
    status = getattr(service, "status", None)
    balancer = getattr(status, "loadBalancer", None)
    ingress = getattr(balancer, "ingress", None) or []
    if not ingress:
        return None
    return ingress[0].ip or ingress[0].hostname or None

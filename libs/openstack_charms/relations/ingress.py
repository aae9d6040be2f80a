"""Requirer of per-application ingress over ``ingress`` (traefik-k8s, interface v2).

The format of traefik's ``charms.traefik_k8s.v2.ingress`` library, where every
value is JSON-encoded:

- the requirer's leader writes, in its application databag, ``model``,
  ``name``, ``port``, ``strip-prefix``, ``redirect-https`` and ``scheme``
  (how traefik reaches the backends: ``http`` or ``https``);
- every requirer unit writes ``host`` in its unit databag: where traefik
  reaches that unit;
- the provider answers, in its application databag, ``ingress`` =
  ``{"url": "http://<address>/<model>-<app>"}``.

The unit's ``host`` is the pod's stable DNS name
``<app>-<n>.<app>-endpoints.<model>.svc.cluster.local``, the name traefik's
library gets from ``socket.getfqdn()`` in a pod, computed here without a
system call. The optional ``ip`` is not published: a pod's address changes
when the pod is recreated while its name does not, and providers that prefer
``ip`` over ``host`` would be left routing to a dead address until the next
hook; keeping it fresh would cost a ``network-get`` on every hook.

Ingress is optional to run the service: while it is missing or incomplete the
charm serves under its Kubernetes service URL, so this handler never holds the
charm back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import RelationHandler, load_json, update_databag

if TYPE_CHECKING:
    from ..charm import ReconcilingCharm


@dataclasses.dataclass(frozen=True)
class IngressContext:
    """The URL the provider routes to this application."""

    url: str


def unit_host(unit_name: str, app_name: str, model_name: str) -> str:
    """Return the pod's DNS name inside the cluster, stable across pod restarts."""
    return f"{unit_name.replace('/', '-')}.{app_name}-endpoints.{model_name}.svc.cluster.local"


class IngressRequirer(RelationHandler[IngressContext]):
    """Asks for one URL routed to every unit of this application on ``port``."""

    holds_back_when_incomplete = False

    def __init__(
        self,
        charm: ReconcilingCharm,
        endpoint: str,
        *,
        port: int,
        strip_prefix: bool = True,
        tls_endpoint: str = "certificates",
    ) -> None:
        super().__init__(charm, endpoint)
        self.port = port
        self.strip_prefix = strip_prefix
        self.tls_endpoint = tls_endpoint

    @property
    def scheme(self) -> str:
        """``https`` once the service itself serves TLS, so the backend hop is encrypted too."""
        for handler in self.charm.handlers:
            if handler.endpoint == self.tls_endpoint and handler.ready:
                return "https"
        return "http"

    def app_request(self) -> dict[str, str | None]:
        """Return the application databag this side publishes."""
        charm = self.charm
        return {
            "model": json.dumps(charm.model.name),
            "name": json.dumps(charm.app.name),
            "port": json.dumps(self.port),
            "strip-prefix": json.dumps(self.strip_prefix),
            "redirect-https": json.dumps(False),
            "scheme": json.dumps(self.scheme),
        }

    def unit_request(self) -> dict[str, str | None]:
        """Return the unit databag every unit publishes."""
        charm = self.charm
        return {"host": json.dumps(unit_host(charm.unit.name, charm.app.name, charm.model.name))}

    def publish(self) -> None:
        """Every unit writes its host; the leader also writes the application request."""
        relations = self.relations
        if not relations:
            return
        unit_request = self.unit_request()
        app_request = self.app_request() if self.charm.is_leader else None
        for relation in relations:
            update_databag(relation.data[self.charm.unit], unit_request)
            if app_request is not None:
                update_databag(relation.data[self.charm.app], app_request)

    def get_context(self) -> IngressContext | None:
        """Return the routed URL, or ``None`` until the provider has published a valid one."""
        relation = self.relation
        if relation is None or relation.app is None:
            return None
        ingress = load_json(relation.data[relation.app], "ingress")
        if ingress is None:
            self.waiting_for = "ingress"
            return None
        url = ingress["url"]
        if not isinstance(url, str):
            raise TypeError("ingress url is not a string")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ingress url {url!r} is not an http(s) URL")
        return IngressContext(url=url.rstrip("/"))

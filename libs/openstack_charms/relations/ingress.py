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

An optional ingress does not hold the service back: while it is missing or
incomplete the charm serves under its Kubernetes service URL. A mandatory one
(the internal ingress of a service that machines outside the cluster reach)
holds it back until the URL is there, so the catalog never gets the
cluster-local URL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import Incomplete, RelationDataError, RelationHandler, load_json, update_databag

if TYPE_CHECKING:
    from .base import HandlerHost


@dataclasses.dataclass(frozen=True)
class IngressContext:
    """The URL the provider routes to this application."""

    url: str

    @property
    def hostname(self) -> str:
        """The URL's host name."""
        return urlsplit(self.url).hostname or ""


def unit_host(unit_name: str, app_name: str, model_name: str) -> str:
    """Return the pod's DNS name inside the cluster, stable across pod restarts."""
    return f"{unit_name.replace('/', '-')}.{app_name}-endpoints.{model_name}.svc.cluster.local"


def parse_url(url: object) -> str:
    """An http(s) URL with a host and nothing that could break a config line (else RelationDataError)."""
    if not isinstance(url, str):
        raise RelationDataError("ingress url is not a string")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise RelationDataError("ingress url contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RelationDataError(f"ingress url {url[:60]!r} is not an http(s) URL")
    return url.rstrip("/")


class IngressRequirer(RelationHandler[IngressContext]):
    """Asks for one URL routed to every unit of this application on ``port``.

    ``tls`` tells whether the service itself serves HTTPS, so that traefik's hop
    to the backend is encrypted too.
    """

    holds_back_when_incomplete = False

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str,
        *,
        port: int,
        tls: Callable[[], bool] = lambda: False,
        strip_prefix: bool = True,
    ) -> None:
        super().__init__(host, endpoint)
        self.port = port
        self.tls = tls
        self.strip_prefix = strip_prefix

    def app_request(self) -> dict[str, str | None]:
        """Return the application databag this side publishes."""
        host = self.host
        return {
            "model": json.dumps(host.model.name),
            "name": json.dumps(host.app.name),
            "port": json.dumps(self.port),
            "strip-prefix": json.dumps(self.strip_prefix),
            "redirect-https": json.dumps(False),
            "scheme": json.dumps("https" if self.tls() else "http"),
        }

    def unit_request(self) -> dict[str, str | None]:
        """Return the unit databag every unit publishes."""
        host = self.host
        return {"host": json.dumps(unit_host(host.unit.name, host.app.name, host.model.name))}

    def publish(self) -> None:
        """Every unit writes its host; the leader also writes the application request."""
        relations = self.relations
        if not relations:
            return
        unit_request = self.unit_request()
        app_request = self.app_request() if self.host.is_leader else None
        for relation in relations:
            update_databag(relation.data[self.host.unit], unit_request)
            if app_request is not None:
                update_databag(relation.data[self.host.app], app_request)

    def get_context(self) -> IngressContext:
        """Return the routed URL, or raise until the provider has published a valid one."""
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the provider application")
        ingress = load_json(relation.data[relation.app], "ingress")
        if ingress is None:
            raise Incomplete("ingress")
        if not isinstance(ingress, dict):
            raise RelationDataError("ingress is not a JSON object")
        return IngressContext(url=parse_url(ingress.get("url")))

"""Nova's offer to its hypervisors over ``nova-service`` (interface ``nova``), both sides.

The format is sunbeam's (see the project's interface notes, nova-compute.md).
Everything is in **nova's application databag**, written by nova's leader, the
five keys always together. Juju keeps no empty value (setting ``""`` removes a
key), so an unknown value is an absent key, which the requirer reads as ``""``:

- ``spice-proxy-url``: public URL of the SPICE HTML5 console (what the hypervisor
  gives its guests' consoles); empty until nova's public ingress answers;
- ``pci-aliases``: nova's PCI aliases, a JSON list as text (``[]`` for none);
- ``region``: nova's region;
- ``metadata-url``: URL of nova's metadata API behind its ingress; empty until routed;
- ``metadata-proxy-shared-secret-id``: the id of an application-owned Juju secret
  with one key, ``metadata-proxy-shared-secret``, granted to the hypervisor
  application on the relation. The value never travels in plain text.

The requirer publishes nothing. It is ready exactly when ``spice-proxy-url`` is
non-empty (as sunbeam's hypervisor); then its context, :class:`NovaServiceContext`,
has every key parsed. A requirer charm's context class declares the field the
wiring fills::

    nova_service: NovaServiceContext | None = None
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ops

from .base import Incomplete, RelationDataError, RelationHandler, update_databag

if TYPE_CHECKING:
    from .base import HandlerHost

SECRET_KEY = "metadata-proxy-shared-secret"
"""The one key of the shared secret's content."""
SECRET_ID_KEY = "metadata-proxy-shared-secret-id"


@dataclasses.dataclass(frozen=True)
class NovaServiceData:
    """What nova's leader writes in its application databag on ``nova-service``."""

    spice_proxy_url: str = ""
    pci_aliases: str = "[]"
    """A JSON list of alias objects, as text."""
    region: str = ""
    metadata_url: str = ""
    metadata_secret_id: str = ""
    """The id of the secret holding the metadata proxy shared secret."""

    def databag(self) -> dict[str, str | None]:
        """The five keys, always all present."""
        return {
            "spice-proxy-url": self.spice_proxy_url,
            "pci-aliases": self.pci_aliases or "[]",
            "region": self.region,
            "metadata-url": self.metadata_url,
            SECRET_ID_KEY: self.metadata_secret_id,
        }

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> NovaServiceData:
        """Read the provider's databag; missing keys are empty strings."""
        return cls(
            spice_proxy_url=data.get("spice-proxy-url", ""),
            pci_aliases=data.get("pci-aliases", "") or "[]",
            region=data.get("region", ""),
            metadata_url=data.get("metadata-url", ""),
            metadata_secret_id=data.get(SECRET_ID_KEY, ""),
        )


@dataclasses.dataclass(frozen=True)
class NovaServiceContext:
    """What a hypervisor gets from nova: the requirer's context (``ctx.nova_service``)."""

    spice_proxy_url: str
    """Public SPICE HTML5 console URL (never empty: the requirer is ready only with it)."""
    metadata_url: str
    """URL of nova's metadata API, ``""`` until nova's metadata ingress answers."""
    region: str
    """Nova's region, ``""`` if nova sent none."""
    pci_aliases: tuple[Mapping[str, Any], ...]
    """Nova's PCI aliases, one JSON object each (as ``[pci] alias`` takes them)."""
    metadata_proxy_shared_secret: str | None
    """The metadata proxy shared secret, ``None`` when nova sent no secret id."""

    @property
    def pci_aliases_json(self) -> str:
        """The aliases as one JSON list, ``""`` for none (the snap's ``compute.pci-aliases``)."""
        return json.dumps(list(self.pci_aliases)) if self.pci_aliases else ""


def _aliases(text: str) -> tuple[Mapping[str, Any], ...]:
    try:
        value = json.loads(text)
    except ValueError:
        raise RelationDataError("pci-aliases is not JSON") from None
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise RelationDataError("pci-aliases is not a JSON list of objects")
    return tuple(value)


class NovaServiceProvider(RelationHandler[None]):
    """Nova's leader: the five keys on every relation, and the shared secret granted to each hypervisor.

    ``offer`` builds the databag content (called only by the leader, once the
    service runs, and only when a relation exists); the secret is granted
    before its id is first written on a relation, so a requirer that sees the
    id can read the secret.
    """

    reads_remote = False

    def __init__(self, host: HandlerHost, endpoint: str, *, offer: Callable[[], NovaServiceData]) -> None:
        super().__init__(host, endpoint)
        self._offer = offer

    def provide(self, ready: bool) -> None:
        """Leader, while nova serves: publish the offer where it differs; grant where the id is new."""
        if not ready or not self.host.is_leader:
            return
        relations = self.relations
        if not relations:
            return
        offer = self._offer()
        values = offer.databag()
        secret: ops.Secret | None = None
        for relation in relations:
            data = relation.data[self.host.app]
            if offer.metadata_secret_id and data.get(SECRET_ID_KEY) != offer.metadata_secret_id:
                # a grant outlives the hook: it is made again only where the id is new to the relation
                if secret is None:
                    secret = self.host.model.get_secret(id=offer.metadata_secret_id)
                secret.grant(relation)
            update_databag(data, values)


class NovaServiceRequirer(RelationHandler[NovaServiceContext]):
    """A hypervisor's side: ready once nova sent its console URL, and the shared secret if it sent one."""

    def get_context(self) -> NovaServiceContext:
        """Nova's offer, or Incomplete naming ``spice-proxy-url`` (or the secret's grant)."""
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the nova application")
        data = NovaServiceData.from_databag(relation.data[relation.app])
        if not data.spice_proxy_url:
            raise Incomplete("spice-proxy-url")
        aliases = _aliases(data.pci_aliases)
        shared: str | None = None
        if data.metadata_secret_id:
            try:
                content = self.host.model.get_secret(id=data.metadata_secret_id).get_content(refresh=True)
            except (ops.SecretNotFoundError, ops.ModelError):
                raise Incomplete(f"access to the {SECRET_KEY} secret (not granted yet)") from None
            shared = content.get(SECRET_KEY) or None
            if shared is None:
                raise Incomplete(f"{SECRET_KEY} in its secret")
        return NovaServiceContext(
            spice_proxy_url=data.spice_proxy_url,
            metadata_url=data.metadata_url,
            region=data.region,
            pci_aliases=aliases,
            metadata_proxy_shared_secret=shared,
        )

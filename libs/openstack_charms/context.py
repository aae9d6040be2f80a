"""The typed context: everything a charm's plan and templates may use, built once per hook.

Every shared part always exists, as a value or ``None`` (the relation is absent
or optional and not ready), so ``{% if amqp %}`` is always safe in a template
and pyright sees every attribute in the charm. A charm extends it by
subclassing, usually with properties computed from the shared parts::

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class GlanceContext(ServiceContext[GlanceConfig]):
        @property
        def worker_self_reference_url(self) -> str: ...

Templates receive every field by name (``config``, ``database``, ``amqp``,
``identity``, ...) and the context itself as ``ctx`` (for a subclass's
properties: ``{{ ctx.worker_self_reference_url }}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .config import ServiceConfig

if TYPE_CHECKING:
    from .relations.amqp import AMQPContext
    from .relations.database import DatabaseContext
    from .relations.identity import IdentityCredentialsContext, IdentityServiceContext
    from .relations.ingress import IngressContext
    from .relations.ovsdb import OVSDBContext
    from .relations.tls import CAContext, TLSContext

ConfigT = TypeVar("ConfigT", bound=ServiceConfig)


@dataclasses.dataclass(frozen=True)
class URLs:
    """Where the service is reached: what the catalog registers."""

    public: str
    internal: str
    admin: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceContext(Generic[ConfigT]):
    """The shared parts of every charm's context."""

    config: ConfigT
    service_name: str
    app: str
    unit: str
    model: str
    databases: Mapping[str, DatabaseContext] = dataclasses.field(default_factory=dict)
    """Ready databases by endpoint (nova: ``database``, ``api-database``, ``cell-database``)."""
    amqp: AMQPContext | None = None
    identity: IdentityServiceContext | None = None
    credentials: IdentityCredentialsContext | None = None
    tls: TLSContext | None = None
    ca: CAContext | None = None
    ingress_internal: IngressContext | None = None
    ingress_public: IngressContext | None = None
    ovsdb: OVSDBContext | None = None
    """The OVN databases (``ovsdb-cms``)."""
    urls: URLs | None = None
    """``None`` for a charm that serves no API."""

    @property
    def database(self) -> DatabaseContext | None:
        """The database of the ``database`` endpoint."""
        return self.databases.get("database")

    @property
    def scheme(self) -> str:
        """``https`` once this unit serves TLS."""
        return "https" if self.tls else "http"

    def template_vars(self) -> dict[str, Any]:
        """What templates see: every field by name, and the context as ``ctx``."""
        names = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**names, "database": self.database, "ctx": self}

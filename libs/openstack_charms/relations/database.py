"""Requirer of a MySQL database over ``mysql_client`` (mysql-k8s, mysql-router-k8s).

The data-platform database interface, in the v0 form its providers still answer
(their library serves v0 and v1 requirers alike):

- the requirer's leader writes, in its application databag, ``database`` (the
  name it wants), ``requested-secrets`` (a JSON list naming the fields it wants
  in Juju secrets rather than in plain relation data) and, optionally,
  ``extra-user-roles``;
- the provider's leader answers, in its application databag, ``endpoints``
  (comma-separated ``host:port``, the primary first), ``read-only-endpoints``,
  ``version``, ``database`` and ``secret-user``: the URI of a Juju secret it
  granted to the relation, holding ``username`` and ``password``. Providers
  from before Juju secrets put ``username`` and ``password`` in the databag.

The handler is our own rather than the data-platform library because that
library's import alone costs a quarter of a second per hook; the interface
test proves it against the real provider library.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

import ops

from .base import Incomplete, RelationDataError, RelationHandler

if TYPE_CHECKING:
    from .base import HandlerHost

logger = logging.getLogger(__name__)

#: what the data-platform requirer library asks to receive through secrets
REQUESTED_SECRETS = ("username", "password", "tls", "tls-ca", "uris", "read-only-uris")
DEFAULT_PORT = 3306


@dataclasses.dataclass(frozen=True)
class DatabaseContext:
    """Where and as whom to connect to one database."""

    connection: str
    """SQLAlchemy URL, e.g. ``mysql+pymysql://user:pass@host:3306/glance``."""
    host: str
    port: int
    name: str
    username: str
    password: str

    @property
    def location(self) -> str:
        """Server and database, without credentials: what a db sync depends on.

        A password rotation does not call for another sync.
        """
        return f"{self.host}:{self.port}/{self.name}"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 hosts in brackets); a missing port means 3306."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise ValueError("empty endpoint")
    if endpoint.startswith("["):
        host, sep, rest = endpoint[1:].partition("]")
        if not sep:
            raise ValueError(f"unbalanced brackets in endpoint {endpoint!r}")
        port = rest.removeprefix(":")
    elif endpoint.count(":") == 1:
        host, port = endpoint.split(":")
    else:
        # a bare IPv6 address or a bare host name
        host, port = endpoint, ""
    port_number = int(port) if port else DEFAULT_PORT
    if not host or not 0 < port_number < 65536:
        raise ValueError(f"invalid endpoint {endpoint!r}")
    return host, port_number


def connection_url(host: str, port: int, name: str, username: str, password: str) -> str:
    """SQLAlchemy URL for PyMySQL, with user and password percent-encoded.

    Encoding everything but letters and digits keeps characters that mean
    something to URLs (``@``, ``/``, ``:``) or to oslo.config (``$``) out of the
    rendered file; SQLAlchemy decodes them again.
    """
    netloc_host = f"[{host}]" if ":" in host else host
    return (
        f"mysql+pymysql://{quote(username, safe='')}:{quote(password, safe='')}"
        f"@{netloc_host}:{port}/{quote(name, safe='')}"
    )


class DatabaseRequirer(RelationHandler[DatabaseContext]):
    """Asks a MySQL provider for one database and reads back where and how to connect.

    A charm that needs several databases (nova: ``nova``, ``nova_api``,
    ``nova_cell0``) declares one endpoint per database and creates one handler
    for each.
    """

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str = "database",
        *,
        database_name: str,
        extra_user_roles: Sequence[str] = (),
    ) -> None:
        super().__init__(host, endpoint)
        self.database_name = database_name
        self.extra_user_roles = tuple(extra_user_roles)

    def app_request(self) -> dict[str, str | None]:
        """Return the application databag this side publishes."""
        return {
            "database": self.database_name,
            "requested-secrets": json.dumps(list(REQUESTED_SECRETS)),
            "extra-user-roles": ",".join(self.extra_user_roles) or None,
        }

    def get_context(self) -> DatabaseContext:
        """Return the provider's answer, or raise naming the missing field."""
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the provider application")
        remote = relation.data[relation.app]
        endpoints = [e for e in (remote.get("endpoints") or "").split(",") if e.strip()]
        if not endpoints:
            raise Incomplete("endpoints")
        username, password = self._credentials(remote)
        try:
            host, port = parse_endpoint(endpoints[0])
        except ValueError as e:
            raise RelationDataError(str(e)) from None
        return DatabaseContext(
            connection=connection_url(host, port, self.database_name, username, password),
            host=host,
            port=port,
            name=self.database_name,
            username=username,
            password=password,
        )

    def _credentials(self, remote: ops.RelationDataContent) -> tuple[str, str]:
        secret_uri = remote.get("secret-user")
        if secret_uri:
            # a new revision (password rotation) is announced by secret-changed:
            # move to it then, and spare the extra secret-get in every other hook
            refresh = self.host.hook == "secret-changed"
            try:
                content = self.host.model.get_secret(id=secret_uri).get_content(refresh=refresh)
            except (ops.SecretNotFoundError, ops.ModelError):
                # granted to the relation a moment after the URI appears, or revoked
                raise Incomplete("access to the secret-user secret") from None
            username, password = content.get("username"), content.get("password")
            if not username:
                raise Incomplete("username in the secret-user secret")
            if not password:
                raise Incomplete("password in the secret-user secret")
            return username, password
        username, password = remote.get("username"), remote.get("password")
        if not username or not password:
            raise Incomplete("secret-user")
        return username, password

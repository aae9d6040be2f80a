"""Requirer of a RabbitMQ user and vhost over ``rabbitmq`` (rabbitmq-k8s).

The format rabbitmq-k8s speaks (its ``charms.rabbitmq_k8s.v0.rabbitmq`` library):

- the requirer's leader writes, in its application databag, ``username``,
  ``vhost`` and ``external_connectivity`` (JSON boolean: whether the broker
  should hand out its load-balancer address instead of the in-cluster name);
- the provider's leader answers, in its application databag, ``password`` and
  ``hostname`` (``<app>-endpoints.<model>.svc.cluster.local``, which resolves to
  every broker pod, or the load-balancer address). Older providers gave no
  ``hostname``; their units' ``ingress-address`` are the brokers then.

The broker listens on 5672; the provider publishes no port.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from urllib.parse import quote

from .base import Incomplete, RelationHandler

if TYPE_CHECKING:
    from .base import HandlerHost

AMQP_PORT = 5672


@dataclasses.dataclass(frozen=True)
class AMQPContext:
    """Credentials and brokers for oslo.messaging."""

    transport_url: str
    """``rabbit://user:pass@host:5672/vhost``, one ``user:pass@host:port`` per broker."""
    hosts: tuple[str, ...]
    port: int
    username: str
    password: str
    vhost: str


def transport_url(hosts: tuple[str, ...], port: int, username: str, password: str, vhost: str) -> str:
    """oslo.messaging's URL: every broker with the credentials, comma-joined, then the vhost.

    User, password and vhost are percent-encoded (oslo.messaging decodes them),
    so that ``@``, ``/``, ``:`` or ``$`` in a password cannot break the URL or
    trigger oslo.config's interpolation.
    """
    user = f"{quote(username, safe='')}:{quote(password, safe='')}"
    brokers = ",".join(f"{user}@{f'[{h}]' if ':' in h else h}:{port}" for h in hosts)
    return f"rabbit://{brokers}/{quote(vhost, safe='')}"


class AMQPRequirer(RelationHandler[AMQPContext]):
    """Asks rabbitmq-k8s for a user and a vhost, reads back the password and the brokers."""

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str = "amqp",
        *,
        username: str,
        vhost: str,
        external_connectivity: bool = False,
    ) -> None:
        super().__init__(host, endpoint)
        self.username = username
        self.vhost = vhost
        self.external_connectivity = external_connectivity

    def app_request(self) -> dict[str, str | None]:
        """Return the application databag this side publishes."""
        return {
            "username": self.username,
            "vhost": self.vhost,
            "external_connectivity": "true" if self.external_connectivity else "false",
        }

    def get_context(self) -> AMQPContext:
        """Return password and brokers, or raise naming the missing field."""
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the provider application")
        remote = relation.data[relation.app]
        password = remote.get("password")
        if not password:
            raise Incomplete("password")
        hostname = (remote.get("hostname") or "").strip()
        if hostname:
            hosts: tuple[str, ...] = (hostname,)
        else:
            # only read unit data when the provider is too old to give a hostname
            addresses = {relation.data[unit].get("ingress-address") for unit in relation.units}
            hosts = tuple(sorted(a for a in addresses if a))
        if not hosts:
            raise Incomplete("hostname")
        return AMQPContext(
            transport_url=transport_url(hosts, AMQP_PORT, self.username, password, self.vhost),
            hosts=hosts,
            port=AMQP_PORT,
            username=self.username,
            password=password,
            vhost=self.vhost,
        )

"""Kubernetes sidecar charms: a service charm and an API charm over Pebble workloads."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import ops

from . import templating
from .charm import ReconcilingCharm
from .config import APIConfig
from .relations.base import RelationHandler
from .status import NotReady
from .workload import Command, Directory, File, HTTPCheck, PebbleApplier, Service, Workload


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A file rendered from a template into the service container."""

    template: str
    path: str
    user: str | None = None
    """Owner; ``None`` means the charm's ``service_user``."""
    group: str | None = None
    permissions: int = 0o640
    restarts: tuple[str, ...] | None = None


class ServiceCharm(ReconcilingCharm):
    """A charm running one OpenStack service in one or more Pebble containers.

    Subclasses declare ``service_name``, their config files and services, and
    optionally a ``db_sync`` command run by the leader once per database and
    upgrade before any unit starts the service.
    """

    service_name: ClassVar[str]
    #: the workload container (default: the service name)
    container_name: ClassVar[str | None] = None
    #: the system user and group the service runs as in the image
    service_user: ClassVar[str] = "root"
    config_files: ClassVar[tuple[ConfigFile, ...]] = ()
    #: argv run by the leader after the files are in place (e.g. ``glance-manage db_sync``)
    db_sync: ClassVar[tuple[str, ...]] = ()

    @property
    def container(self) -> str:
        """Name of the main workload container."""
        return self.container_name or self.service_name

    # -- what subclasses override ------------------------------------------

    def template_context(self) -> dict[str, Any]:
        """Everything the templates see: config, every handler's context, extras."""
        context: dict[str, Any] = {"config": self.typed_config, "service_name": self.service_name}
        for handler in self.handlers:
            context[handler.endpoint.replace("-", "_")] = handler.context
        return context

    def services(self) -> list[Service]:
        """The long-running services of the main container."""
        return []

    def checks(self) -> list[HTTPCheck]:
        """Pebble health checks of the main container."""
        return []

    def directories(self) -> list[Directory]:
        """Directories the service needs with their own owner and mode, made before any file."""
        return []

    def extra_files(self, context: Mapping[str, Any]) -> list[File]:
        """Files not rendered from templates: the TLS certificate, key and CAs once received.

        Subclasses adding their own files extend ``super().extra_files(context)``.
        """
        user = self.service_user

        def owned(path: str, content: str, permissions: int) -> File:
            return File(path=path, content=content, user=user, group=user, permissions=permissions)

        files: list[File] = []
        tls = context.get("certificates")
        if tls is not None:
            files += [
                owned(tls.certificate_path, tls.server_chain, 0o644),
                owned(tls.private_key_path, tls.private_key, 0o600),
                owned(tls.ca_path, tls.ca, 0o644),
            ]
        ca = context.get("receive_ca_cert")
        if ca is not None:
            files.append(owned(ca.path, ca.bundle, 0o644))
        return files

    def bootstrap(self, applier: PebbleApplier) -> None:
        """Leader work after files are in place and before services start."""
        if self.db_sync:
            database = self.ready_context("database")
            self.leader_task(
                "db-sync",
                f"{self.db_sync}\n{getattr(database, 'connection', '')}",
                lambda: applier.run(Command(self.db_sync, user=self.service_user)),
                what=" ".join(self.db_sync[:2]),
            )

    def after_start(self) -> None:
        """Work that needs the service running (registration, leader API calls)."""

    # -- the machinery -----------------------------------------------------

    def rendered_files(self) -> list[ConfigFile]:
        """Every file rendered from a template: the charm's own, then the shared logging config."""
        return [
            *self.config_files,
            ConfigFile("logging.conf.j2", f"/etc/{self.service_name}/logging.conf", permissions=0o644),
        ]

    def workload(self) -> Workload:
        """The desired state of the main container (the template context built once)."""
        context = self.template_context()
        files = [
            File(
                path=f.path,
                content=templating.render(self.templates_dir, f.template, context),
                user=f.user or self.service_user,
                group=f.group or f.user or self.service_user,
                permissions=f.permissions,
                restarts=f.restarts,
            )
            for f in self.rendered_files()
        ]
        files += self.extra_files(context)
        return Workload(self.container, self.services(), self.checks(), files, self.directories())

    def handler(self, endpoint: str) -> RelationHandler[Any] | None:
        """The handler of ``endpoint``, if the charm has one."""
        return next((h for h in self.handlers if h.endpoint == endpoint), None)

    def ready_context(self, endpoint: str) -> Any:
        """The context of ``endpoint``'s handler, or ``None`` while absent or not ready."""
        handler = self.handler(endpoint)
        return handler.context if handler is not None else None

    def configure(self) -> None:
        container = self.unit.get_container(self.container)
        applier = PebbleApplier(container, self.workload())
        applier.apply(start=False, record=False)
        try:
            self.bootstrap(applier)
        except NotReady:
            # what was pushed is recorded even when the leader's work has to wait
            applier.record()
            raise
        applier.apply(start=True)
        self.after_start()


class APICharm(ServiceCharm):
    """A charm serving an OpenStack API through uwsgi.

    Relation handlers are created for the endpoints the charm declares in
    charmcraft.yaml: declaring ``database``, ``amqp``, ``identity-service``,
    ``ingress-internal``/``ingress-public``, ``certificates`` or
    ``receive-ca-cert`` is enough to get the matching handler.
    """

    config_class = APIConfig
    api_port: ClassVar[int]
    #: catalog service type and description registered in keystone
    service_type: ClassVar[str]
    service_description: ClassVar[str] = ""
    #: the WSGI application, e.g. ``glance.wsgi.api:application``
    wsgi_app: ClassVar[str]
    #: path of the API's version document, answered without a token (health check)
    healthcheck_path: ClassVar[str] = "/"
    #: endpoint name -> database name; nova declares several
    databases: ClassVar[Mapping[str, str] | None] = None
    amqp_vhost: ClassVar[str] = "openstack"
    #: extra ``[uwsgi]`` options of this API (e.g. chunked uploads for glance)
    uwsgi_options: ClassVar[Mapping[str, str]] = {}

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        declared = set(self.meta.requires)
        if "database" in declared or self.databases:
            from .relations.database import DatabaseRequirer

            for endpoint, name in (self.databases or {"database": self.service_name}).items():
                DatabaseRequirer(self, endpoint, database_name=name)
        if "amqp" in declared:
            from .relations.amqp import AMQPRequirer

            AMQPRequirer(self, "amqp", username=self.service_name, vhost=self.amqp_vhost)
        for endpoint in ("ingress-internal", "ingress-public"):
            if endpoint in declared:
                from .relations.ingress import IngressRequirer

                IngressRequirer(self, endpoint, port=self.api_port)
        if "identity-service" in declared:
            from .relations.identity import IdentityServiceRequirer

            IdentityServiceRequirer(self, "identity-service")
        if "certificates" in declared:
            from .relations.tls import CertificatesRequirer

            CertificatesRequirer(self, "certificates")
        if "receive-ca-cert" in declared:
            from .relations.tls import CATransferRequirer

            CATransferRequirer(self, "receive-ca-cert")

    def catalog_endpoints(self) -> list[dict[str, str]]:
        """What this charm asks keystone to register (``service-endpoints``)."""
        return [
            {
                "service_name": self.service_name,
                "type": self.service_type,
                "description": self.service_description,
                "admin_url": self.admin_url,
                "internal_url": self.internal_url,
                "public_url": self.public_url,
            }
        ]

    @property
    def uwsgi_config_path(self) -> str:
        """Where the shared uwsgi template is rendered."""
        return f"/etc/{self.service_name}/{self.service_name}-api-uwsgi.ini"

    def template_context(self) -> dict[str, Any]:
        context = super().template_context()
        context.update(
            api_port=self.api_port,
            wsgi_app=self.wsgi_app,
            uwsgi_name=f"{self.service_name}-api",
            tls=context.get("certificates"),
            service_type=self.service_type,
            uwsgi_options=dict(self.uwsgi_options),
        )
        return context

    def rendered_files(self) -> list[ConfigFile]:
        return [*super().rendered_files(), ConfigFile("uwsgi.ini.j2", self.uwsgi_config_path)]

    @property
    def tls_enabled(self) -> bool:
        """Whether the API serves HTTPS (a certificate has been issued)."""
        return self.ready_context("certificates") is not None

    def services(self) -> list[Service]:
        return [
            Service(
                name=f"{self.service_name}-api",
                command=f"uwsgi --ini {self.uwsgi_config_path}",
                user=self.service_user,
                group=self.service_user,
                summary=f"{self.service_name} API (uwsgi)",
            )
        ]

    def checks(self) -> list[HTTPCheck]:
        scheme = "https" if self.tls_enabled else "http"
        return [
            HTTPCheck(
                name=f"{self.service_name}-api-up",
                url=f"{scheme}://localhost:{self.api_port}{self.healthcheck_path}",
            )
        ]

    # -- URLs --------------------------------------------------------------

    def local_url(self) -> str:
        """The URL other pods reach this application at without ingress.

        The Kubernetes service name is stable across pod restarts, unlike a
        pod address, so catalog entries built from it stay valid.
        """
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self.app.name}.{self.model.name}.svc:{self.api_port}"

    def _ingress_url(self, endpoint: str) -> str | None:
        return getattr(self.ready_context(endpoint), "url", None)

    @property
    def public_url(self) -> str:
        """Public endpoint: the public ingress, else the internal one, else the service."""
        return (
            self._ingress_url("ingress-public") or self._ingress_url("ingress-internal") or self.local_url()
        )

    @property
    def internal_url(self) -> str:
        """Internal endpoint: the internal ingress, else the Kubernetes service."""
        return self._ingress_url("ingress-internal") or self.local_url()

    @property
    def admin_url(self) -> str:
        """Admin endpoint (the same as the internal one since keystone v3)."""
        return self.internal_url

#!/usr/bin/env python3
"""Nova: the OpenStack Compute control plane, on Kubernetes.

Databases, message bus, keystone registration, ingress, TLS and placement's
readiness come from the endpoints the charm declares; the charm declares
nova's own parts: five containers (compute API and metadata API under uwsgi,
scheduler, conductor, console proxy) over one nova.conf, the leader's schema
and cell work, and its offer to the hypervisors on ``nova-service``.

Choices, and why:

- **Console: SPICE HTML5** (``nova-spicehtml5proxy``), not noVNC: sunbeam's
  hypervisors give their guests SPICE consoles and wait for ``spice-proxy-url``
  on ``nova-service`` before they are ready; a noVNC URL is nothing they read.
  The proxy is reached through ``ingress-console`` (traefik routes
  ``/<model>-<app>-spiceproxy``); until that answers the URL is empty, as sunbeam's.
- **Host discovery: periodic**, ``[scheduler] discover_hosts_in_cells_interval``
  on the leader's scheduler (every 30 s; ``-1`` elsewhere, since nova advises one
  discovering scheduler). ``nova-service`` carries no host names (sunbeam's
  format), and hypervisors in another model register whenever nova-compute
  starts, not on a relation event a leader task could follow. The
  ``discover-hosts`` action maps new hosts at once.
- **Placement, neutron, glance and cinder through the keystone catalog**
  (internal interface, nova's region), as sunbeam's nova does: placement and
  neutron with the service user keystone gave on ``identity-service`` (nova
  calls them as itself: resource providers, port bindings), glance and cinder
  with the user's token (cinder with the service user for its admin calls).
- **The metadata proxy shared secret**: an application-owned Juju secret the
  leader creates once (label ``shared-metadata-secret``), rendered into nova.conf
  (mode 0640) and granted to each hypervisor application on ``nova-service``;
  only its id is in relation data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ops
from openstack_charms import (
    APIConfig,
    Check,
    Command,
    Directory,
    File,
    InvalidOption,
    K8sCharm,
    LeaderTask,
    OpenStackCharm,
    Service,
    ServiceContext,
    Wire,
    Workload,
)
from openstack_charms.relations.ingress import IngressContext, IngressRequirer
from openstack_charms.relations.nova_service import SECRET_KEY, NovaServiceData

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

CONF_DIR = "/etc/nova"
CONF = f"{CONF_DIR}/nova.conf"
STATE_PATH = "/var/lib/nova"
LOCK_PATH = "/var/lock/nova"
API_PORT, METADATA_PORT, CONSOLE_PORT = 8774, 8775, 6082
SPICE_PROXY = "nova-spicehtml5proxy"
#: where nova-manage runs (leader work, actions): the API's image holds all of nova
MANAGE_CONTAINER = "nova-api"
SECRET_LABEL = "shared-metadata-secret"
DISCOVERY_INTERVAL = 30
CELL0_UUID = "00000000-0000-0000-0000-000000000000"
#: cell0 mapped, or its connection updated (a new password); the URL comes in the environment
CELL0_SCRIPT = "\n".join(
    (
        f"if nova-manage cell_v2 list_cells | grep -q ' {CELL0_UUID} '; then",
        f"  exec nova-manage cell_v2 update_cell --cell_uuid {CELL0_UUID} --transport-url none:/// "
        '--database_connection "$CELL0_CONNECTION"',
        "fi",
        'exec nova-manage cell_v2 map_cell0 --database_connection "$CELL0_CONNECTION"',
    )
)
#: cell1 created, or updated to nova.conf's [database] connection and transport_url (the defaults of both)
CELL1_SCRIPT = "\n".join(
    (
        "cell=$(nova-manage cell_v2 list_cells"
        " | awk -F'|' '$2 ~ /^ *cell1 *$/ {gsub(/ /, \"\", $3); print $3}')",
        'if [ -n "$cell" ]; then exec nova-manage cell_v2 update_cell --cell_uuid "$cell"; fi',
        "exec nova-manage cell_v2 create_cell --name cell1",
    )
)
_FILTER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ZONE = re.compile(r"[^\s:,]{1,255}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NovaConfig(APIConfig):
    """Nova's options on top of every API charm's."""

    cpu_allocation_ratio: float = 0.0
    ram_allocation_ratio: float = 0.0
    disk_allocation_ratio: float = 0.0
    scheduler_enabled_filters: str = (
        "ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,"
        "ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter"
    )
    default_availability_zone: str = "nova"
    console_access: bool = True
    pci_aliases: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("cpu", "ram", "disk"):
            if getattr(self, f"{name}_allocation_ratio") < 0:
                raise InvalidOption(f"{name}-allocation-ratio", "must be 0 (nova's default) or more")
        bad = [f for f in self.enabled_filters if not _FILTER.fullmatch(f)]
        if bad or not self.enabled_filters:
            raise InvalidOption("scheduler-enabled-filters", f"must be filter class names, not {bad[:1]}")
        if not _ZONE.fullmatch(self.default_availability_zone):
            raise InvalidOption("default-availability-zone", "must be a zone name (no spaces, ':' or ',')")
        self.pci_alias_list  # noqa: B018 (validates)

    @property
    def enabled_filters(self) -> tuple[str, ...]:
        """``[filter_scheduler] enabled_filters``, in order."""
        return tuple(f.strip() for f in self.scheduler_enabled_filters.split(",") if f.strip())

    @property
    def pci_alias_list(self) -> tuple[str, ...]:
        """Each alias as one line of JSON (``[pci] alias`` is given once per alias)."""
        if not self.pci_aliases.strip():
            return ()
        try:
            aliases = json.loads(self.pci_aliases)
        except ValueError:
            raise InvalidOption("pci-aliases", "is not JSON") from None
        if not isinstance(aliases, list) or not all(isinstance(a, dict) and a.get("name") for a in aliases):
            raise InvalidOption("pci-aliases", "must be a JSON list of objects, each with a name")
        return tuple(json.dumps(a, sort_keys=True) for a in aliases)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NovaContext(ServiceContext[NovaConfig]):
    """The shared context, nova's two other ingress routes, the shared secret and the discovery interval."""

    ingress_metadata: IngressContext | None = None
    ingress_console: IngressContext | None = None
    metadata_secret: str = ""
    discover_hosts_interval: int = -1

    @property
    def console_url(self) -> str:
        """The SPICE client's URL, with the websocket path traefik routes; ``""`` without a route."""
        if self.ingress_console is None:
            return ""
        path = urlsplit(self.ingress_console.url).path
        base = f"{self.ingress_console.url}/spice_auto.html"
        return f"{base}?path={path}" if path else base

    @property
    def metadata_url(self) -> str:
        """Where the hypervisors' metadata agents reach the metadata API; ``""`` without a route."""
        return self.ingress_metadata.url if self.ingress_metadata else ""


class RoutedIngress(IngressRequirer):
    """An ingress for another port of this application, routed under ``<app>-<suffix>``."""

    def __init__(self, charm: OpenStackCharm[Any, Any], endpoint: str, *, port: int, suffix: str) -> None:
        super().__init__(charm, endpoint, port=port, tls=lambda: charm.tls_enabled)
        self.suffix = suffix

    def app_request(self) -> dict[str, str | None]:
        # traefik routes /<model>-<name>: a name of its own keeps it apart from the API's route
        return {**super().app_request(), "name": json.dumps(f"{self.host.app.name}-{self.suffix}")}


def _routed(port: int, suffix: str, field: str) -> Wire:
    return Wire(
        lambda charm, endpoint: RoutedIngress(charm, endpoint, port=port, suffix=suffix), (), field=field
    )


class NovaCharm(K8sCharm[NovaConfig, NovaContext]):
    """OpenStack Compute API, metadata API, scheduler, conductor and SPICE console proxy."""

    config_class = NovaConfig
    context_class = NovaContext
    service_name = "nova"
    service_user = "nova"
    api_port = API_PORT
    databases = {"api-database": "nova_api", "database": "nova", "cell-database": "nova_cell0"}
    own_wiring = {
        "ingress-metadata": _routed(METADATA_PORT, "metadata", "ingress_metadata"),
        "ingress-console": _routed(CONSOLE_PORT, "spiceproxy", "ingress_console"),
    }

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for action in ("list-compute-nodes", "discover-hosts"):
            framework.observe(self.on[action].action, self._on_action)

    def catalog(self) -> Sequence[ServiceEndpoint]:
        entry = self.catalog_entry("compute", "OpenStack Compute")
        # clients expect the v2.1 API at the endpoint itself
        return [
            dataclasses.replace(
                entry,
                admin_url=f"{entry.admin_url}/v2.1",
                internal_url=f"{entry.internal_url}/v2.1",
                public_url=f"{entry.public_url}/v2.1",
            )
        ]

    def build_context(self) -> NovaContext:
        assert self.peers is not None
        secret = self.peers.secret(
            SECRET_LABEL, lambda: {SECRET_KEY: str(uuid.uuid4())}, what="the metadata proxy shared secret"
        )
        return NovaContext(
            **self.context_fields(),
            metadata_secret=secret[SECRET_KEY],
            discover_hosts_interval=DISCOVERY_INTERVAL if self.is_leader else -1,
        )

    def workloads(self, ctx: NovaContext) -> Sequence[Workload]:
        user = self.service_user
        # every process reads the same nova.conf
        files = (
            self.render(
                "nova.conf.j2", CONF, ctx, values={"state_path": STATE_PATH, "console_port": CONSOLE_PORT}
            ),
            self.logging_config(ctx),
        )
        dirs = (Directory(STATE_PATH, user, user, 0o750), Directory(LOCK_PATH, user, user, 0o750))
        # scheduler and conductor answer nothing a check could ask in a moment (nova-manage takes seconds):
        # the checks see that they run, and oslo.messaging itself reconnects them to the queue
        return [
            self.api(ctx, "nova-api", "nova.wsgi.osapi_compute:application", API_PORT, files, dirs),
            self.api(ctx, "nova-metadata", "nova.wsgi.metadata:application", METADATA_PORT, files, dirs),
            self.daemon(
                ctx,
                "nova-scheduler",
                "nova-scheduler",
                files,
                dirs,
                Check.exec("nova-scheduler-running", "pgrep -f nova-scheduler"),
            ),
            self.daemon(
                ctx,
                "nova-conductor",
                "nova-conductor",
                files,
                dirs,
                Check.exec("nova-conductor-running", "pgrep -f nova-conductor"),
            ),
            self.daemon(
                ctx,
                "nova-spiceproxy",
                SPICE_PROXY,
                files,
                dirs,
                Check.tcp("console-up", CONSOLE_PORT, restarts=(SPICE_PROXY,)),
            ),
        ]

    def api(
        self,
        ctx: NovaContext,
        name: str,
        wsgi_app: str,
        port: int,
        files: Sequence[File],
        dirs: Sequence[Directory],
    ) -> Workload:
        """One of the two APIs under uwsgi in its own container, reading /etc/nova."""
        api = self.uwsgi_api(
            ctx, container=name, name=name, wsgi_app=wsgi_app, port=port, workers=ctx.config.workers
        )
        # the WSGI app takes no --config-file: it reads nova.conf and api-paste.ini from this directory
        environment = {"OS_NOVA_CONFIG_DIR": CONF_DIR}
        paste = self.render("api-paste.ini.j2", f"{CONF_DIR}/api-paste.ini", ctx, permissions=0o644)
        return Workload(
            name,
            services=[dataclasses.replace(s, environment=environment) for s in api.services],
            checks=api.checks,
            files=[*api.files, *files, paste],
            directories=dirs,
        )

    def daemon(
        self,
        ctx: NovaContext,
        container: str,
        name: str,
        files: Sequence[File],
        dirs: Sequence[Directory],
        check: Check,
    ) -> Workload:
        """A nova daemon in its own container, with nova.conf, its trust files and its check."""
        user = self.service_user
        service = Service(
            name, shlex.join((name, "--config-file", CONF)), user=user, group=user, summary=name
        )
        return Workload(
            container,
            services=[service],
            checks=[check],
            files=[*files, *self.trust_files(ctx)],
            directories=dirs,
        )

    def leader_work(self, ctx: NovaContext) -> Sequence[LeaderTask]:
        user = self.service_user
        api_db, cell0 = ctx.databases["api-database"], ctx.databases["cell-database"]
        cell1 = ctx.databases["database"]
        queue = f"{','.join(ctx.amqp.hosts)}:{ctx.amqp.port}/{ctx.amqp.vhost}" if ctx.amqp else ""
        return [
            self.db_sync(
                ctx,
                MANAGE_CONTAINER,
                "nova-manage",
                "api_db",
                "sync",
                endpoint="api-database",
                name="api-db-sync",
            ),
            # Inputs are where the databases and the queue are, not their passwords (as for a db sync):
            # a rotated password is not remapped (cell mappings hold the URLs), a moved database is.
            LeaderTask(
                "map-cell0",
                MANAGE_CONTAINER,
                Command(
                    ("sh", "-c", CELL0_SCRIPT), user=user, environment={"CELL0_CONNECTION": cell0.connection}
                ),
                inputs=f"{api_db.location}\n{cell0.location}",
            ),
            LeaderTask(
                "create-cell1",
                MANAGE_CONTAINER,
                Command(("sh", "-c", CELL1_SCRIPT), user=user),
                inputs=f"{api_db.location}\n{cell1.location}\n{queue}",
            ),
            self.db_sync(ctx, MANAGE_CONTAINER, "nova-manage", "db", "sync", name="db-sync"),
        ]

    def after_start(self, ctx: NovaContext) -> None:
        if not ctx.config.console_access:
            # Pebble keeps a service its layer once had: a proxy turned off is stopped here
            container = self.unit.get_container("nova-spiceproxy")
            if container.get_service(SPICE_PROXY).is_running():
                container.stop(SPICE_PROXY)

    def nova_service_offer(self) -> NovaServiceData:
        """What the hypervisors get on ``nova-service`` (see the library's nova_service)."""
        ctx = self.context
        assert self.peers is not None
        return NovaServiceData(
            spice_proxy_url=ctx.console_url,
            pci_aliases=f"[{', '.join(ctx.config.pci_alias_list)}]",
            region=ctx.config.region,
            metadata_url=ctx.metadata_url,
            metadata_secret_id=self.peers.get(f"{SECRET_LABEL}-secret-id") or "",
        )

    def active_message(self, ctx: NovaContext) -> str:
        handler = self.handlers.get("nova-service")
        if handler is not None and handler.related and not ctx.console_url:
            return "hypervisors wait for the console URL: relate ingress-console"
        return ""

    def _on_action(self, event: ops.ActionEvent) -> None:
        from nova_actions import run_action

        run_action(self, event)


if __name__ == "__main__":  # pragma: nocover
    ops.main(NovaCharm)

"""Kubernetes sidecar charms: one Pebble workload per container, and the builders API charms use."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .charm import ConfigT, ContextT, OpenStackCharm
from .context import ServiceContext, URLs
from .pebble import PebbleApplier
from .plan import Applier, Check, Service, Workload
from .relations import wiring

if TYPE_CHECKING:
    from .relations.ingress import IngressContext


class K8sCharm(OpenStackCharm[ConfigT, ContextT]):
    """A charm whose workloads are its Pebble containers; every declared container has exactly one."""

    applier_wire = wiring.PEBBLE_APPLIER

    def applier(self, workload: Workload) -> Applier:
        mounts = self.meta.containers[workload.target].mounts
        storages = {m.location: m.storage for m in mounts.values() if m.location and m.storage}
        return PebbleApplier(self.unit.get_container(workload.target), workload, storages)

    def check_plan(self, plan: Sequence[Workload]) -> None:
        super().check_plan(plan)
        declared = set(self.meta.containers)
        targets = {w.target for w in plan}
        if targets != declared:
            raise RuntimeError(
                f"{self.app.name}: workloads for {sorted(targets)}, containers declared: {sorted(declared)}"
            )

    # -- where the service is reached --------------------------------------------

    def local_url(self) -> str:
        """The URL other pods reach this application at without ingress.

        The Kubernetes service name is stable across pod restarts, unlike a
        pod address, so catalog entries built from it stay valid.
        """
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self.app.name}.{self.model.name}.svc:{self.api_port}"

    def _ingress(self, endpoint: str) -> IngressContext | None:
        handler = self.handlers.get(endpoint)
        if handler is None:
            return None
        from .relations.ingress import IngressContext

        context = handler.context
        return context if isinstance(context, IngressContext) else None

    def _ingress_url(self, endpoint: str) -> str | None:
        ingress = self._ingress(endpoint)
        return ingress.url if ingress else None

    @property
    def urls(self) -> URLs | None:
        """Where the API is reached.

        Public: the public ingress, else the internal one, else the service;
        internal: the internal ingress, else the service; admin: the internal one
        (keystone v3 has no separate admin API).
        """
        if not self.api_port:
            return None
        local = self.local_url()
        internal = self._ingress_url("ingress-internal") or local
        public = self._ingress_url("ingress-public") or internal
        return URLs(public=public, internal=internal, admin=internal)

    def certificate_names(self) -> tuple[str, list[str]]:
        """The common name and DNS names of this unit's certificate.

        The Kubernetes service name (what other pods and the catalog use), its
        fully qualified form, the pod's own name (what traefik connects to) and
        the host names of ready ingress URLs.
        """
        from .config import is_ip_address
        from .relations.ingress import unit_host

        app, model = self.app.name, self.model.name
        common_name = f"{app}.{model}.svc"
        names = [
            common_name,
            f"{common_name}.cluster.local",
            unit_host(self.unit.name, app, model),
        ]
        for endpoint in wiring.INGRESS_ENDPOINTS:
            ingress = self._ingress(endpoint)
            host = ingress.hostname if ingress else ""
            if host and host not in names and not is_ip_address(host):
                names.append(host)
        return common_name, names

    # -- builders ------------------------------------------------------------------

    def uwsgi_api(
        self,
        ctx: ServiceContext[Any],
        *,
        container: str,
        name: str,
        wsgi_app: str,
        port: int | None = None,
        healthcheck_path: str = "/",
        workers: int = 2,
        options: Mapping[str, str] | None = None,
    ) -> Workload:
        """One API served by uwsgi in ``container``: its ini, service, HTTP check and TLS files.

        The check (``<name>-up``) restarts the service when it fails.
        """
        port = port or self.api_port
        path = f"/etc/{self.service_name}/{name}-uwsgi.ini"
        values = {
            "uwsgi_name": name,
            "api_port": port,
            "wsgi_app": wsgi_app,
            "workers": workers,
            "uwsgi_options": dict(options or {}),
        }
        ini = self.render("uwsgi.ini.j2", path, ctx, values=values)
        service = Service(
            name,
            f"uwsgi --ini {path}",
            user=self.service_user,
            group=self.service_user,
            summary=f"{name} (uwsgi)",
        )
        # uwsgi's master keeps running (so Pebble's on-failure never fires) while every worker
        # hangs: a failing check is the only sign, and a restart what brings the API back
        if ctx.tls is None:
            check = Check.http(f"{name}-up", f"http://localhost:{port}{healthcheck_path}", restarts=(name,))
        else:
            # Pebble's HTTP check verifies the certificate against the container's system CAs and
            # the URL's host, and localhost is no name of this unit's certificate: curl checks the
            # served certificate against the unit's CA and a name it was issued for, on localhost
            host = self.certificate_names()[0]
            argv = ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "--max-time", "3"]
            argv += ["--cacert", ctx.tls.ca_path, "--resolve", f"{host}:{port}:127.0.0.1"]
            argv.append(f"https://{host}:{port}{healthcheck_path}")
            check = Check.exec(f"{name}-up", shlex.join(argv), restarts=(name,))
        return Workload(container, services=[service], checks=[check], files=[ini, *self.trust_files(ctx)])

#!/usr/bin/env python3
"""A test-only charm with three containers: an API, a scheduler and a conductor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import ops
from openstack_charms.config import APIConfig
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Check, LeaderTask, Service, Workload

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

CONF = "/etc/demo/demo.conf"


class DemoMultiCharm(K8sCharm[APIConfig, ServiceContext[APIConfig]]):
    """An API, a scheduler and a conductor, each in its own container."""

    config_class = APIConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    api_port = 8999

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("demo", "Demo API")]

    def workloads(self, ctx: ServiceContext[APIConfig]) -> Sequence[Workload]:
        conf = self.render("demo.conf.j2", CONF, ctx)
        logging = self.logging_config(ctx)
        api = self.uwsgi_api(
            ctx,
            container="demo-api",
            name="demo-api",
            wsgi_app="demo.wsgi:application",
            workers=ctx.config.workers,
        )
        user = self.service_user
        return [
            api + Workload("demo-api", files=[conf, logging]),
            Workload(
                "demo-scheduler",
                services=[Service("demo-scheduler", f"demo-scheduler --config-file {CONF}", user=user)],
                checks=[Check.exec("demo-scheduler-alive", "pgrep -f demo-scheduler", level="alive")],
                files=[conf, logging],
            ),
            Workload(
                "demo-conductor",
                services=[Service("demo-conductor", f"demo-conductor --config-file {CONF}", user=user)],
                checks=[Check.tcp("demo-conductor-up", 9100)],
                files=[conf, logging],
            ),
        ]

    def leader_work(self, ctx: ServiceContext[APIConfig]) -> Sequence[LeaderTask]:
        return [self.db_sync(ctx, "demo-api", "demo-manage", "db", "sync")]


if __name__ == "__main__":  # pragma: nocover
    ops.main(DemoMultiCharm)

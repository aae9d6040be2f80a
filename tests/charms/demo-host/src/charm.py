#!/usr/bin/env python3
"""A test-only machine charm: a pinned package, its config, its service and an agent."""

from __future__ import annotations

from collections.abc import Sequence

import ops
from openstack_charms import HOST, Apt, MachineCharm, Service, ServiceConfig, ServiceContext, Workload

CONF = "/etc/demo/demo.conf"


class DemoHostCharm(MachineCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    """A daemon from a Debian package and an agent the charm declares, on the machine."""

    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        conf = self.render("demo.conf.j2", CONF, ctx, user="root", group="demo")
        logging = self.logging_config(ctx)
        return [
            Workload(
                HOST,
                packages=[Apt("demo-daemon", "1.2-1")],
                files=[conf, logging],
                services=[
                    Service("demo-daemon"),
                    Service("demo-agent", f"/usr/bin/demo-agent --config-file {CONF}", user="demo"),
                ],
            )
        ]


if __name__ == "__main__":  # pragma: nocover
    ops.main(DemoHostCharm)

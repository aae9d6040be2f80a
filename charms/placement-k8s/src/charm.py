#!/usr/bin/env python3
"""Placement: the OpenStack inventory and allocation API of resource providers, on Kubernetes.

Database, keystone registration, ingress, TLS and the ``placement`` readiness
flag nova reads come from the endpoints the charm declares; the charm itself
declares one uwsgi API in one container and its db sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import ops
from openstack_charms import (
    APIConfig,
    InvalidOption,
    K8sCharm,
    LeaderTask,
    ServiceContext,
    Workload,
    check_choice,
    check_range,
)

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

GENERATION_STRATEGIES = ("depth-first", "breadth-first")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlacementConfig(APIConfig):
    """Placement's options on top of every API charm's."""

    randomize_allocation_candidates: bool = False
    max_allocation_candidates: int = -1
    allocation_candidates_generation_strategy: str = "depth-first"
    allocation_conflict_retry_count: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_allocation_candidates == 0 or self.max_allocation_candidates < -1:
            raise InvalidOption(
                "max-allocation-candidates",
                f"is {self.max_allocation_candidates}, must be -1 (no limit) or at least 1",
            )
        check_choice(
            "allocation-candidates-generation-strategy",
            self.allocation_candidates_generation_strategy,
            GENERATION_STRATEGIES,
        )
        check_range("allocation-conflict-retry-count", self.allocation_conflict_retry_count, 0, 100)


class PlacementCharm(K8sCharm[PlacementConfig, ServiceContext[PlacementConfig]]):
    """OpenStack Placement API."""

    config_class = PlacementConfig
    context_class = ServiceContext
    service_name = "placement"
    service_user = "placement"
    api_port = 8778

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("placement", "OpenStack Placement")]

    def workloads(self, ctx: ServiceContext[PlacementConfig]) -> Sequence[Workload]:
        api = self.uwsgi_api(
            ctx,
            container="placement",
            name="placement-api",
            wsgi_app="placement.wsgi.api:application",
            workers=ctx.config.workers,
        )
        conf = self.render("placement.conf.j2", "/etc/placement/placement.conf", ctx)
        return [api + Workload("placement", files=[conf, self.logging_config(ctx)])]

    def leader_work(self, ctx: ServiceContext[PlacementConfig]) -> Sequence[LeaderTask]:
        return [self.db_sync(ctx, "placement", "placement-manage", "db", "sync")]


if __name__ == "__main__":  # pragma: nocover
    ops.main(PlacementCharm)

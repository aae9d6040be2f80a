#!/usr/bin/env python3
"""Placement: the OpenStack inventory and allocation API of resource providers, on Kubernetes.

Everything an API charm does (database, keystone registration, ingress, TLS,
uwsgi under Pebble, db sync on the leader) comes from
:class:`openstack_charms.k8s.APICharm`; this charm declares Placement's
specifics and answers nova on the ``placement`` relation.
"""

from __future__ import annotations

import dataclasses
import json

import ops
from openstack_charms.config import APIConfig, InvalidOption, check_choice, check_range
from openstack_charms.k8s import APICharm, ConfigFile
from openstack_charms.relations.base import RelationHandler, update_databag
from openstack_charms.status import NotReady

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


class PlacementProvider(RelationHandler[None]):
    """The ``placement`` interface: ``ready`` as a JSON boolean in the application databag.

    This is the service-readiness format nova-k8s reads; the leader writes
    ``true`` once the API runs on a synced database, ``false`` whenever the
    charm cannot keep it so.
    """

    holds_back_when_incomplete = False

    def get_context(self) -> None:
        """Nothing to read from nova."""
        return None

    def announce(self, ready: bool) -> None:
        """Tell every related application whether placement is ready."""
        if not self.charm.is_leader:
            return
        for relation in self.relations:
            update_databag(relation.data[self.charm.app], {"ready": json.dumps(ready)})


class PlacementCharm(APICharm):
    """OpenStack Placement API."""

    config_class = PlacementConfig
    service_name = "placement"
    service_user = "placement"
    api_port = 8778
    service_type = "placement"
    service_description = "OpenStack Placement"
    wsgi_app = "placement.wsgi.api:application"
    config_files = (ConfigFile("placement.conf.j2", "/etc/placement/placement.conf"),)
    db_sync = ("placement-manage", "db", "sync")

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.placement = PlacementProvider(self, "placement")

    def reconcile(self) -> None:
        """Reconcile, then tell nova whether placement is ready."""
        try:
            super().reconcile()
        except NotReady:
            self.placement.announce(False)
            raise
        self.placement.announce(True)


if __name__ == "__main__":  # pragma: nocover
    ops.main(PlacementCharm)

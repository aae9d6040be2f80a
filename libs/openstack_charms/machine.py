"""Machine charms: the same reconcile, status and config, with packages and systemd on the host."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .charm import ConfigT, ContextT, OpenStackCharm
from .plan import HOST, Applier, Workload
from .relations import wiring

if TYPE_CHECKING:
    from .host import HostBackend


class MachineCharm(OpenStackCharm[ConfigT, ContextT]):
    """A charm whose one workload is its machine (target :data:`~.plan.HOST`).

    The host applier keeps its manifest in :attr:`state_dir`, so that a steady
    hook runs no dpkg, apt or systemctl at all; unit tests replace
    :meth:`host_backend` so that nothing on the test machine is touched.
    """

    applier_wire = wiring.HOST_APPLIER

    def check_plan(self, plan: Sequence[Workload]) -> None:
        super().check_plan(plan)
        wrong = [w.target for w in plan if w.target != HOST]
        if wrong:
            raise RuntimeError(f"{self.app.name}: a machine charm has one workload, {HOST!r}, not {wrong}")

    def certificate_names(self) -> tuple[str, list[str]]:
        """The machine's fully qualified name, and its short host name, for its certificate."""
        import socket

        fqdn = socket.getfqdn()
        short = fqdn.split(".", 1)[0]
        return fqdn, [fqdn] if short == fqdn else [fqdn, short]

    @property
    def state_dir(self) -> pathlib.Path:
        """Where this unit keeps what it applied (beside the charm, so an upgrade starts afresh)."""
        return self.charm_dir / ".openstack-charm"

    def host_backend(self) -> HostBackend | None:
        """The machine operations; ``None`` is the real machine (tests return a fake)."""
        return None

    def host(self) -> HostBackend:
        """The machine, as the host applier sees it: for what a charm checks before its plan."""
        backend = self.host_backend()
        if backend is None:
            from .host import SystemHost

            backend = SystemHost(self.state_dir)
        return backend

    def applier(self, workload: Workload) -> Applier:
        from .host import HostApplier

        return HostApplier(workload, self.state_dir, self.host_backend())

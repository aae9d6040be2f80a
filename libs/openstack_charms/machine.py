"""Machine charms: the same reconcile, status and config, with apt packages and systemd units."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import ClassVar

from .charm import ReconcilingCharm
from .status import Blocked, Waiting


@dataclasses.dataclass(frozen=True)
class HostFile:
    """A file the charm owns on the machine."""

    path: str
    content: str
    owner: str = "root"
    group: str = "root"
    permissions: int = 0o640
    restarts: tuple[str, ...] = ()


class MachineCharm(ReconcilingCharm):
    """A charm whose workload is Debian packages and systemd services on its machine.

    Subclasses declare ``packages`` and ``systemd_services`` and return their
    files from :meth:`host_files`; :meth:`configure` installs what is missing,
    writes only files whose content changed and restarts only the services
    those files name.
    """

    packages: ClassVar[tuple[str, ...]] = ()
    systemd_services: ClassVar[tuple[str, ...]] = ()

    def host_files(self) -> list[HostFile]:
        """The files this charm renders on the machine."""
        return []

    def configure(self) -> None:
        self.install_packages()
        restart: set[str] = set()
        for f in self.host_files():
            if write_if_changed(f):
                restart |= set(f.restarts)
        self.start_services(restart)

    def install_packages(self) -> None:
        """Install the declared packages that are not installed yet."""
        if not self.packages:
            return
        from charmlibs import apt

        try:
            apt.add_package(list(self.packages), update_cache=False)
        except apt.PackageNotFoundError as e:
            raise Blocked(f"package not found: {e}") from None
        except apt.PackageError as e:
            raise Waiting(f"installing packages failed, will retry: {e}") from None

    def start_services(self, restart: set[str]) -> None:
        """Start what is stopped, restart what changed."""
        if not self.systemd_services:
            return
        from charmlibs import systemd

        try:
            for service in self.systemd_services:
                if service in restart:
                    systemd.service_restart(service)
                elif not systemd.service_running(service):
                    systemd.service_start(service)
        except systemd.SystemdError as e:
            raise Waiting(f"systemd could not start a service, will retry: {e}") from None


def write_if_changed(f: HostFile) -> bool:
    """Write ``f`` atomically with its owner and mode; return whether it changed."""
    import grp
    import pwd

    path = pathlib.Path(f.path)
    data = f.content.encode()
    try:
        same = hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
        if same and (path.stat().st_mode & 0o7777) == f.permissions:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.permissions)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, f.permissions)
    os.chown(tmp, pwd.getpwnam(f.owner).pw_uid, grp.getgrnam(f.group).gr_gid)
    os.replace(tmp, path)
    return True

"""Machine charm files: written only when changed, with owner and mode."""

from __future__ import annotations

import stat
from pathlib import Path

from openstack_charms.machine import HostFile, write_if_changed


def test_file_is_written_with_its_mode_and_only_when_changed(tmp_path: Path) -> None:
    f = HostFile(str(tmp_path / "etc" / "svc.conf"), "a = 1\n", permissions=0o640)
    assert write_if_changed(f) is True
    path = Path(f.path)
    assert path.read_text() == "a = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert write_if_changed(f) is False
    assert write_if_changed(HostFile(f.path, "a = 2\n", permissions=0o640)) is True
    assert path.read_text() == "a = 2\n"


def test_mode_drift_is_repaired(tmp_path: Path) -> None:
    f = HostFile(str(tmp_path / "secret.conf"), "password = x\n", permissions=0o600)
    write_if_changed(f)
    Path(f.path).chmod(0o644)
    assert write_if_changed(f) is True
    assert stat.S_IMODE(Path(f.path).stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))

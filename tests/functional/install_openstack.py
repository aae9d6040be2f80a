"""Install the pinned OpenStack release (services, clients, tempest) for the functional tests.

    python tests/functional/install_openstack.py VENV

The services run as their own users (keystone, glance, placement), as in their
images, so the venv is built from the system's Python 3.11 (not a per-user
interpreter under /root) in a directory every user can reach. It is reused
while tests/functional/requirements.txt is unchanged.
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
import sys
import time

REQUIREMENTS = pathlib.Path(__file__).with_name("requirements.txt")
SYSTEM_PYTHON = "/usr/bin/python3.11"
LIBS = pathlib.Path(__file__).resolve().parents[2] / "libs"
#: what pip builds against: libvirt-python against Debian's libvirt (pinned with the sandbox's packages)
BUILD_PACKAGES = ("libvirt-dev", "pkg-config")


def main() -> None:
    """Create or reuse the venv at argv[1]."""
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    venv = pathlib.Path(sys.argv[1])
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    marker = venv / ".requirements-sha256"
    if marker.exists() and marker.read_text() == digest:
        print(f"OpenStack venv {venv} is up to date")
        return
    if not pathlib.Path(SYSTEM_PYTHON).exists():
        sys.exit(
            f"{SYSTEM_PYTHON} is missing: install Debian's python3.11, python3.11-venv and python3.11-dev"
        )
    start = time.monotonic()
    sys.path.insert(0, str(LIBS))
    from openstack_charms.sandbox.packages import ensure_debian

    ensure_debian(BUILD_PACKAGES)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    marker.write_text(digest)
    print(f"OpenStack venv {venv} installed in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()

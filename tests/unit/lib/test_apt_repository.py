"""Apt repositories in the host applier: the source before the packages, one update per change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openstack_charms.host import Completed, HostApplier
from openstack_charms.plan import HOST, Apt, AptRepository, Command, File, Service, Workload
from openstack_charms.status import Blocked, Waiting
from openstack_charms.testing.host import FakeHost

SOURCE = "/etc/apt/sources.list.d/cloud-archive.sources"
KEYRING = "/usr/share/keyrings/ubuntu-cloud-keyring.gpg"
UPDATE = ("run", "apt-get", "update", "-q")
UCA = AptRepository(
    "cloud-archive",
    "http://ubuntu-cloud.archive.canonical.com/ubuntu",
    "noble-updates/gazpacho",
    signed_by=KEYRING,
    keyring_package=Apt("ubuntu-cloud-keyring"),
)
NOVA = Apt("nova-compute", "3:33.0.2-0ubuntu1~cloud0")


def workload(*repositories: AptRepository, **changes: Any) -> Workload:
    base: dict[str, Any] = {
        "repositories": repositories or (UCA,),
        "packages": (NOVA,),
        "files": (File("/etc/nova/nova.conf", "[DEFAULT]\n", group="nova", restarts=("nova-compute",)),),
        "services": (Service("nova-compute"),),
    }
    base.update(changes)
    return Workload(HOST, **base)


@pytest.fixture
def fake(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root", repositories={"nova-compute": "noble-updates/gazpacho"})


def apply(fake: FakeHost, tmp_path: Path, w: Workload | None = None) -> set[str]:
    """One hook: a new applier, as each hook is a new process."""
    return HostApplier(w or workload(), tmp_path / "state", fake).apply(start=True)


def test_the_source_is_added_and_the_lists_updated_before_any_package(fake: FakeHost, tmp_path: Path) -> None:
    assert apply(fake, tmp_path) == {"nova-compute"}
    assert fake.read_text(SOURCE) == (
        "Types: deb\n"
        "URIs: http://ubuntu-cloud.archive.canonical.com/ubuntu\n"
        "Suites: noble-updates/gazpacho\n"
        "Components: main\n"
        f"Signed-By: {KEYRING}\n"
    )
    assert fake.mode(SOURCE) == 0o644
    assert fake.calls[:4] == [
        # the keyring comes from the machine's own archive, so it is there before its source
        ("apt", "ubuntu-cloud-keyring", ""),
        ("write", SOURCE),
        UPDATE,
        ("apt", "nova-compute", "3:33.0.2-0ubuntu1~cloud0"),
    ]
    assert fake.installed["nova-compute"] == "3:33.0.2-0ubuntu1~cloud0"


def test_a_package_of_a_repository_not_declared_is_not_in_the_archive(fake: FakeHost, tmp_path: Path) -> None:
    with pytest.raises(
        Blocked, match=r"apt package nova-compute=3:33\.0\.2-0ubuntu1~cloud0 is not in the archive"
    ):
        apply(fake, tmp_path, workload(repositories=()))
    assert UPDATE not in fake.calls


def test_a_steady_hook_updates_nothing(fake: FakeHost, tmp_path: Path) -> None:
    apply(fake, tmp_path)
    fake.calls.clear()
    assert apply(fake, tmp_path) == set()
    assert fake.calls == []


def test_a_new_suite_is_written_and_updated_once_without_restarting_services(
    fake: FakeHost, tmp_path: Path
) -> None:
    apply(fake, tmp_path)
    fake.calls.clear()
    fake.repositories["nova-compute"] = "noble-updates/next"
    newer = AptRepository(
        UCA.name, UCA.uris, "noble-updates/next", signed_by=KEYRING, keyring_package=UCA.keyring_package
    )
    apply(fake, tmp_path, workload(newer, packages=(Apt("nova-compute", "3:34.0.0-0ubuntu1~cloud0"),)))
    assert fake.calls == [
        ("write", SOURCE),
        UPDATE,
        ("apt", "nova-compute", "3:34.0.0-0ubuntu1~cloud0"),
    ]


def test_a_failed_update_waits_and_is_tried_again_in_the_next_hook(fake: FakeHost, tmp_path: Path) -> None:
    fake.commands["apt-get"] = lambda _: Completed(
        100, "", "E: Failed to fetch …/InRelease  Could not resolve"
    )
    with pytest.raises(Waiting, match="apt-get update failed after an apt source changed; will retry"):
        apply(fake, tmp_path)
    assert "nova-compute" not in fake.installed
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["apt-update"] is True
    del fake.commands["apt-get"]
    fake.calls.clear()
    # the source is already written: only the flag the manifest kept brings the update back
    assert apply(fake, tmp_path) == {"nova-compute"}
    assert fake.calls[:2] == [UPDATE, ("apt", "nova-compute", "3:33.0.2-0ubuntu1~cloud0")]
    assert "apt-update" not in json.loads((tmp_path / "state" / "manifest.json").read_text())


def test_a_source_edited_by_hand_is_written_back_and_updated(fake: FakeHost, tmp_path: Path) -> None:
    apply(fake, tmp_path)
    fake.path(SOURCE).write_text("Types: deb\nURIs: http://mirror.example/ubuntu\nSuites: noble\n")
    fake.calls.clear()
    assert apply(fake, tmp_path) == set()
    assert fake.calls == [("write", SOURCE), UPDATE]


def test_a_dropped_repository_is_removed_and_the_lists_updated(fake: FakeHost, tmp_path: Path) -> None:
    apply(fake, tmp_path)
    fake.calls.clear()
    apply(fake, tmp_path, workload(repositories=(), packages=()))
    assert fake.calls == [("remove", SOURCE), UPDATE]
    assert not fake.path(SOURCE).exists()
    assert "noble-updates/gazpacho" not in fake.suites


def test_a_key_the_charm_ships_is_written_beside_its_source(fake: FakeHost, tmp_path: Path) -> None:
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n…\n-----END PGP PUBLIC KEY BLOCK-----\n"
    shipped = AptRepository(
        "cloud-archive",
        UCA.uris,
        UCA.suites,
        signed_by="/etc/apt/keyrings/cloud-archive.asc",
        key=key,
    )
    apply(fake, tmp_path, workload(shipped))
    assert fake.read_text("/etc/apt/keyrings/cloud-archive.asc") == key
    assert "Signed-By: /etc/apt/keyrings/cloud-archive.asc\n" in fake.read_text(SOURCE)
    assert [c for c in fake.calls if c[0] in ("write", "run")][:3] == [
        ("write", "/etc/apt/keyrings/cloud-archive.asc"),
        ("write", SOURCE),
        UPDATE,
    ]
    assert not any(c[0] == "apt" and c[1] == "ubuntu-cloud-keyring" for c in fake.calls)


def test_a_keyring_package_stays_recorded_while_its_repository_is_declared(
    fake: FakeHost, tmp_path: Path
) -> None:
    apply(fake, tmp_path)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert set(manifest["packages"]) == {"apt:ubuntu-cloud-keyring", "apt:nova-compute"}


@pytest.mark.parametrize(
    "fields",
    [
        {"suites": "noble-updates/gazpacho\nSigned-By: /tmp/evil.gpg"},
        {"uris": "http://a\tb"},
        {"name": "../../trusted"},
        {"name": ""},
    ],
)
def test_a_field_must_be_one_printable_line(fields: dict[str, str]) -> None:
    values = {"name": "x", "uris": "http://archive.example/ubuntu", "suites": "noble"} | fields
    with pytest.raises(ValueError, match="one printable line"):
        AptRepository(values["name"], values["uris"], values["suites"])


def test_a_shipped_key_needs_a_path() -> None:
    with pytest.raises(ValueError, match="names no signed_by path"):
        AptRepository("x", "http://archive.example/ubuntu", "noble", key="KEY").files()


def test_workloads_merge_their_repositories() -> None:
    other = AptRepository("other", "http://archive.example/ubuntu", "noble")
    merged = workload(UCA) + Workload(HOST, repositories=(other,))
    assert merged.repositories == (UCA, other)


def test_the_update_is_a_plain_command_any_backend_runs() -> None:
    # no new backend operation: SystemHost runs it as any one-shot command
    seen: list[Command] = []

    class Recording(FakeHost):
        def run(self, command: Command) -> Completed:
            seen.append(command)
            return super().run(command)

    import tempfile

    with tempfile.TemporaryDirectory() as root:
        host = Recording(root, repositories={"nova-compute": "noble-updates/gazpacho"})
        HostApplier(workload(), Path(root) / "state", host).apply(start=False)
    (update,) = seen
    assert update.argv == ("apt-get", "update", "-q")
    assert update.environment == {"DEBIAN_FRONTEND": "noninteractive"}
    assert update.user is None

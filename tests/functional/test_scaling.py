"""Scaling ovn-central 1 → 3 → 1 (``juju add-unit`` / ``remove-unit``): the raft clusters grow and shrink.

Units join the clusters the founder made, through the addresses on the peer
relation; a unit removed leaves them, and is not left behind as a dead member.
What an operator sees: every unit's ``cluster-status`` action, and the
Northbound database as each unit's OVN client reads it.
"""

from __future__ import annotations

import time

from openstack_charms.sandbox.cloud import Cloud

APP = "ovn-central"
FOUNDER = f"{APP}/0"
SCHEMAS = {"ovn-nb-db-server": "OVN_Northbound", "ovn-sb-db-server": "OVN_Southbound"}
TLS = ["-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem"]


def nbctl(cloud: Cloud, unit: str, *argv: str) -> str:
    """ovn-nbctl in the unit's NB container, with its certificate, against its own server only."""
    db = f"--db=ssl:{cloud.machine.address(unit)}:6641"
    code, out, err = cloud.execute(unit, "ovn-nb-db-server", ["ovn-nbctl", "--timeout=20", db, *TLS, *argv])
    assert code == 0, f"{unit}: ovn-nbctl {' '.join(argv)}: {err}"
    return out


def units(cloud: Cloud) -> list[str]:
    return list(cloud.model.units[APP])


def assert_all_active(cloud: Cloud) -> None:
    statuses = {u: (s.name, s.message) for u, s in cloud.model.unit_statuses().items()}
    assert all(name == "active" for name, _ in statuses.values()), statuses


def clusters(cloud: Cloud, unit: str) -> dict[str, tuple[int, str, str]]:
    """Per database, as the unit's ``cluster-status`` action tells: (members, leader's address, term)."""
    results = cloud.run_action(unit, "cluster-status")
    seen = {}
    for container in SCHEMAS:
        fields = results[container]
        assert fields["status"] == "cluster member", (unit, fields)
        servers = fields["servers"].splitlines()
        # each server line: "<sid> (<sid> at <address>) [(self)] ..."; the leader is named by its sid
        by_sid = {line.split()[0]: line.split()[3].rstrip(")") for line in servers}
        leader = fields["leader"]
        if leader == "self":
            leader = next(line.split()[0] for line in servers if "(self)" in line)
        seen[container] = (len(servers), by_sid.get(leader, f"unknown leader {leader}"), fields["term"])
    return seen


def agreed_clusters(cloud: Cloud, members: int, timeout: float = 60) -> dict[str, tuple[int, str, str]]:
    """The clusters once every unit reports ``members`` members and the same leader and term."""
    deadline = time.monotonic() + timeout
    while True:
        views = {unit: clusters(cloud, unit) for unit in units(cloud)}
        distinct = {tuple(sorted(view.items())) for view in views.values()}
        agreed = next(iter(views.values()))
        if len(distinct) == 1 and all(n == members for n, _, _ in agreed.values()):
            return agreed
        assert time.monotonic() < deadline, f"the units do not agree on {members} members: {views}"
        time.sleep(1)


def test_ovn_central_scales_1_3_1_keeping_its_data_and_no_dead_member(cloud: Cloud) -> None:
    started = time.monotonic()
    assert units(cloud) == [FOUNDER], "the default bundle deploys one ovn-central"
    agreed_clusters(cloud, 1)
    nbctl(cloud, FOUNDER, "ls-add", "scale-proof")
    try:
        added = []
        for _ in range(2):
            added.append(cloud.add_unit(APP))
            assert_all_active(cloud)
        print(f"scaled to 3 in {time.monotonic() - started:.1f} s: {added}")
        grown = agreed_clusters(cloud, 3)
        print(f"every unit sees: {grown}")
        # the Raft addresses are the pods' names: each unit's is in the cluster
        leaders = {address for _, address, _ in grown.values()}
        assert leaders <= {f"ssl:{cloud.pod_name(u)}:{p}" for u in units(cloud) for p in (6643, 6644)}
        for unit in units(cloud):
            assert "scale-proof" in nbctl(cloud, unit, "--no-leader-only", "ls-list"), unit
        # a write through a unit that joined reaches the founder
        nbctl(
            cloud,
            added[-1],
            "--no-leader-only",
            "set",
            "Logical_Switch",
            "scale-proof",
            "other_config:by=new",
        )
        shrink = time.monotonic()
        for unit in reversed(added):
            cloud.remove_unit(unit)
            assert_all_active(cloud)
        print(f"scaled back to 1 in {time.monotonic() - shrink:.1f} s")
        assert units(cloud) == [FOUNDER]
        assert not any(u.startswith(f"{APP}/") and u != FOUNDER for u in cloud.machine.networks)
        shrunk = agreed_clusters(cloud, 1)
        print(f"{FOUNDER} sees: {shrunk}")
        shown = nbctl(cloud, FOUNDER, "--columns=other_config", "list", "Logical_Switch", "scale-proof")
        assert 'by="new"' in shown or "by=new" in shown, shown
    finally:
        # one cloud per session: whatever happened, the other tests find one ovn-central
        for unit in reversed(units(cloud)[1:]):
            cloud.remove_unit(unit)
        if units(cloud) == [FOUNDER]:
            nbctl(cloud, FOUNDER, "--if-exists", "ls-del", "scale-proof")
    print(f"test wall time {time.monotonic() - started:.1f} s")

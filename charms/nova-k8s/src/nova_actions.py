"""nova-k8s actions: the compute hosts in the cells, and mapping new ones now."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import ops

if TYPE_CHECKING:
    from charm import NovaCharm

MANAGE_CONTAINER = "nova-api"
_CREATED = re.compile(r"Creating host mapping for compute host '([^']+)'")


def nova_manage(charm: NovaCharm, *argv: str) -> str:
    """Output of ``nova-manage`` run as nova in the API's container (raises ops.pebble errors)."""
    container = charm.unit.get_container(MANAGE_CONTAINER)
    process = container.exec(["nova-manage", *argv], user=charm.service_user, timeout=300)
    return process.wait_output()[0]


def table_rows(text: str) -> list[list[str]]:
    """The rows of a prettytable (``| a | b |`` lines) after its header, cells stripped."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def list_compute_nodes(charm: NovaCharm, event: ops.ActionEvent) -> None:
    """Every compute host mapped to a cell, with its cell."""
    rows = table_rows(nova_manage(charm, "cell_v2", "list_hosts"))
    hosts = [{"host": r[2], "cell": r[0], "cell-uuid": r[1]} for r in rows if len(r) == 3]
    event.set_results({"count": len(hosts), "compute-nodes": json.dumps(hosts)})


def discover_hosts(charm: NovaCharm, event: ops.ActionEvent) -> None:
    """Map the compute hosts not yet in a cell; the hosts mapped by this run."""
    output = nova_manage(charm, "cell_v2", "discover_hosts", "--verbose")
    mapped = _CREATED.findall(output)
    event.set_results({"count": len(mapped), "mapped-hosts": json.dumps(mapped)})


def run_action(charm: NovaCharm, event: ops.ActionEvent) -> None:
    """Run the action ``event`` names; nova-manage's failure fails it with its last line of error."""
    handlers = {"list-compute-nodes": list_compute_nodes, "discover-hosts": discover_hosts}
    name = event.handle.kind.removesuffix("_action").replace("_", "-")
    try:
        handlers[name](charm, event)
    except ops.pebble.ExecError as e:
        stderr = e.stderr if isinstance(e.stderr, str) else ""
        last = (stderr.strip().splitlines() or ["no error output"])[-1]
        event.fail(f"nova-manage failed (exit code {e.exit_code}): {last}")
    except (ops.pebble.ConnectionError, ops.pebble.APIError, ops.pebble.ChangeError) as e:
        event.fail(f"cannot run nova-manage in {MANAGE_CONTAINER}: {e}")

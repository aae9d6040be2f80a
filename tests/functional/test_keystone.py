"""keystone-k8s: its own files and commands run a keystone that issues and validates tokens."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from typing import Any

from harness import Cloud


def openstack(venv: pathlib.Path, clouds_yaml: pathlib.Path, *args: str) -> Any:
    done = subprocess.run(
        [str(venv / "bin" / "openstack"), "--os-cloud", "openstack", *args, "-f", "json"],
        env={"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "PATH": f"{venv}/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def validate(auth_url: str, admin_token: str, token: str) -> int:
    request = urllib.request.Request(
        f"{auth_url}/auth/tokens", headers={"X-Auth-Token": admin_token, "X-Subject-Token": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_charm_is_active_with_its_real_services(cloud: Cloud) -> None:
    assert {app: s.name for app, s in cloud.model.statuses().items()} == {
        "keystone": "active",
        "glance": "active",
        "placement": "active",
    }
    assert {name for _, name in cloud.machine.processes} == {"keystone-api", "glance-api", "placement-api"}


def test_token_issue_with_the_clouds_yaml_of_get_admin_account(
    venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    token = openstack(venv, admin["clouds_yaml"], "token", "issue")
    assert token["id"] and token["project_id"]

"""keystone-k8s: its own files and commands run a keystone that issues and validates tokens."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from typing import Any

from harness import CREDENTIALS_USER, Cloud


def openstack(venv: pathlib.Path, clouds_yaml: pathlib.Path, *args: str, json_output: bool = True) -> Any:
    """Run the OpenStack client of the release under test against the cloud in ``clouds_yaml``."""
    fmt = ["-f", "json"] if json_output else []
    done = subprocess.run(
        [str(venv / "bin" / "openstack"), "--os-cloud", "openstack", *args, *fmt],
        env={"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "PATH": f"{venv}/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"openstack {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout) if json_output else done.stdout


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


def _keys(directory: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(pathlib.Path(directory).iterdir())}


def test_old_tokens_validate_after_rotate_fernet_keys(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    auth_url = admin["results"]["public-endpoint"]
    before = openstack(venv, admin["clouds_yaml"], "token", "issue")["id"]
    keys_before = _keys("/etc/keystone/fernet-keys")

    results = cloud.model.run_action("keystone", "rotate-fernet-keys")
    assert results["applied"] == "now"
    keys_after = _keys("/etc/keystone/fernet-keys")
    # the staged key became the new primary (highest index), a new key is staged
    assert max(keys_after, key=int) == str(int(max(keys_before, key=int)) + 1)
    assert keys_after[max(keys_after, key=int)] == keys_before["0"]
    assert keys_after["0"] != keys_before["0"]

    after = openstack(venv, admin["clouds_yaml"], "token", "issue")["id"]
    assert validate(auth_url, after, before) == 200, "a token issued before the rotation no longer validates"
    assert validate(auth_url, before, after) == 200
    assert validate(auth_url, after, after[:-4] + "AAAA") == 404, "a forged token validates"


def test_identity_credentials_account_authenticates(
    cloud: Cloud, venv: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    (link,) = [lk for lk in cloud.model.links if lk.ours.endpoint == "identity-credentials"]
    answer = next(r for r in cloud.model.states["keystone"].relations if r.id == link.id)
    data = dict(answer.local_app_data)
    secret = next(s for s in cloud.model.states["keystone"].secrets if s.id == data["credentials"])
    assert link.id in secret.remote_grants, "the credentials are not granted to the requirer"
    account = secret.latest_content
    assert account["username"] == CREDENTIALS_USER
    clouds_yaml = tmp_path / "clouds.yaml"
    clouds_yaml.write_text(
        "clouds:\n  openstack:\n    auth:\n"
        f"      auth_url: {data['public-endpoint']}\n"
        f"      username: {account['username']}\n      password: {account['password']}\n"
        f"      project_name: {data['project-name']}\n      user_domain_name: {data['user-domain-name']}\n"
        f"      project_domain_name: {data['project-domain-name']}\n"
        f"    region_name: {data['region']}\n    identity_api_version: 3\n"
    )
    token = openstack(venv, clouds_yaml, "token", "issue")
    assert token["project_id"] == data["project-id"]

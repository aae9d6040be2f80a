"""Client-side helpers for the functional tests: OpenStack CLI calls and plain REST checks.

The functional tests run in the project's own venv, which has no OpenStack packages. The
OpenStack CLI therefore runs as a subprocess from the OpenStack venv whose path the tests pass
in; identity and placement checks that need no client library speak REST with urllib.
Every subprocess and every HTTP request has a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Highest microversion placement 15.0.0 (2026.1) serves.
PLACEMENT_MICROVERSION = "placement 1.39"
DEFAULT_INVENTORY: Mapping[str, int] = {"VCPU": 8, "MEMORY_MB": 4096}


class CommandError(RuntimeError):
    """A subprocess exited non-zero or timed out; carries what it printed."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        what = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{' '.join(self.cmd)} {what}\nstderr:\n{stderr.strip()}\nstdout:\n{stdout.strip()}")


class HTTPError(RuntimeError):
    """An HTTP request got an unexpected status; carries the status and body."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        super().__init__(f"{method} {url} -> {status}: {body[:2000]}")


@dataclass(frozen=True)
class Credentials:
    """Password credentials of a keystone user, project-scoped."""

    auth_url: str
    username: str
    password: str
    project_name: str = "admin"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = "RegionOne"


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input_bytes: bytes | None = None,
) -> str:
    """Run a command; return its stdout, raise CommandError on non-zero exit or timeout."""
    args = [os.fspath(c) for c in cmd]
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            args, input=input_bytes, capture_output=True, timeout=timeout, env=full_env, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise CommandError(args, None, _text(e.stdout), _text(e.stderr)) from e
    out, err = _text(proc.stdout), _text(proc.stderr)
    if proc.returncode != 0:
        raise CommandError(args, proc.returncode, out, err)
    return out


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def clouds_yaml_text(
    cloud: str,
    creds: Credentials,
    *,
    interface: str = "public",
    api_timeout: int = 30,
    cacert: Path | None = None,
) -> str:
    """A clouds.yaml document with one cloud authenticating with `creds` (trusting `cacert`)."""
    doc = {
        "clouds": {
            cloud: {
                "auth": {
                    "auth_url": creds.auth_url,
                    "username": creds.username,
                    "password": creds.password,
                    "project_name": creds.project_name,
                    "user_domain_name": creds.user_domain_name,
                    "project_domain_name": creds.project_domain_name,
                },
                "region_name": creds.region_name,
                "identity_api_version": 3,
                "interface": interface,
                "api_timeout": api_timeout,
                **({"cacert": str(cacert)} if cacert else {}),
            }
        }
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_clouds_yaml(
    path: Path, cloud: str, creds: Credentials | str, *, interface: str = "public", cacert: Path | None = None
) -> Path:
    """Write clouds.yaml (from `creds`, or verbatim text) readable by the owner only; return its path."""
    text = (
        creds
        if isinstance(creds, str)
        else clouds_yaml_text(cloud, creds, interface=interface, cacert=cacert)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
    return path


def openstack(
    venv: Path, clouds_yaml: Path, cloud: str, *args: str, timeout: float = 60, fmt: str | None = "json"
) -> str:
    """Run `<venv>/bin/openstack --os-cloud CLOUD [-f FMT] ARGS...`; return stdout.

    `-f` goes after the subcommand words (OSC accepts it only there), i.e. appended to `args`;
    pass fmt=None for commands without formatted output (delete, set, image save).
    """
    cmd: list[str] = [str(venv / "bin" / "openstack"), "--os-cloud", cloud, *args]
    if fmt is not None:
        cmd += ["-f", fmt]
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "PYTHONWARNINGS": "ignore"}
    return run(cmd, timeout=timeout, env=env)


def openstack_json(venv: Path, clouds_yaml: Path, cloud: str, *args: str, timeout: float = 60) -> Any:
    """`openstack(...)` with JSON output, parsed."""
    return json.loads(openstack(venv, clouds_yaml, cloud, *args, timeout=timeout))


# --- REST (stdlib only) -------------------------------------------------------------------------


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    timeout: float = 30,
    expect: Sequence[int] = (200,),
) -> tuple[int, Mapping[str, str], Any]:
    """One HTTP request with a JSON body; returns (status, headers, parsed JSON or None).

    Raises HTTPError when the status is not in `expect`.
    """
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, resp_headers, raw = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        status, resp_headers, raw = e.code, dict(e.headers.items()), e.read()
    if status not in expect:
        raise HTTPError(method, url, status, raw.decode(errors="replace"))
    parsed = json.loads(raw) if raw.strip() else None
    return status, resp_headers, parsed


def issue_token(
    auth_url: str,
    username: str,
    password: str,
    *,
    project_name: str = "admin",
    user_domain_name: str = "Default",
    project_domain_name: str = "Default",
    timeout: float = 30,
) -> dict[str, Any]:
    """POST /v3/auth/tokens (password, project scope); return the token body plus "id".

    The dict is keystone's "token" object (expires_at, user, project, roles, catalog, ...) with
    "id" set to the X-Subject-Token header.
    """
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": username, "domain": {"name": user_domain_name}, "password": password}
                },
            },
            "scope": {"project": {"name": project_name, "domain": {"name": project_domain_name}}},
        }
    }
    _, headers, parsed = http_request(
        "POST", f"{auth_url.rstrip('/')}/auth/tokens", body=body, timeout=timeout, expect=(201,)
    )
    token_id = next((v for k, v in headers.items() if k.lower() == "x-subject-token"), None)
    if not token_id or not isinstance(parsed, dict):
        raise RuntimeError(f"keystone answered 201 without a token: headers={sorted(headers)}")
    return {**parsed["token"], "id": token_id}


def issue_token_for(creds: Credentials, *, timeout: float = 30) -> dict[str, Any]:
    """`issue_token` with a Credentials value."""
    return issue_token(
        creds.auth_url,
        creds.username,
        creds.password,
        project_name=creds.project_name,
        user_domain_name=creds.user_domain_name,
        project_domain_name=creds.project_domain_name,
        timeout=timeout,
    )


def validate_token(auth_url: str, admin_token: str, token: str, *, timeout: float = 30) -> bool:
    """GET /v3/auth/tokens: True if keystone accepts `token`, False if it answers 404 (invalid/revoked).

    Any other answer (e.g. 401 because `admin_token` itself is bad) raises HTTPError.
    """
    status, _, _ = http_request(
        "GET",
        f"{auth_url.rstrip('/')}/auth/tokens",
        headers={"X-Auth-Token": admin_token, "X-Subject-Token": token},
        timeout=timeout,
        expect=(200, 404),
    )
    return status == 200


def catalog_url(
    token: Mapping[str, Any], service_type: str, *, interface: str = "public", region: str | None = None
) -> str:
    """The URL of `service_type` at `interface` (and `region`, if given) from a token's catalog."""
    for service in token.get("catalog", []):
        if service.get("type") != service_type:
            continue
        for ep in service.get("endpoints", []):
            if ep.get("interface") == interface and (region is None or ep.get("region_id") == region):
                return str(ep["url"])
    raise LookupError(f"no {interface} endpoint for {service_type!r} (region {region}) in the catalog")


# --- Round trips ---------------------------------------------------------------------------------


def image_roundtrip(
    venv: Path,
    clouds_yaml: Path,
    cloud: str,
    data: bytes,
    tmp: Path,
    *,
    name: str | None = None,
    delete: bool = False,
    timeout: float = 120,
) -> tuple[str, bytes]:
    """Upload `data` as a raw/bare image with the CLI, download it again; return (image id, bytes back).

    With delete=True the image is deleted afterwards (its id is still returned).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    src, dst = tmp / "image-upload.raw", tmp / "image-download.raw"
    src.write_bytes(data)
    name = name or f"functional-{uuid.uuid4().hex[:8]}"
    created = openstack_json(
        venv,
        clouds_yaml,
        cloud,
        "image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", str(src), name,
        timeout=timeout,
    )  # fmt: skip
    image_id = str(created["id"])
    openstack(
        venv, clouds_yaml, cloud, "image", "save", "--file", str(dst), image_id, timeout=timeout, fmt=None
    )
    back = dst.read_bytes()
    if delete:
        openstack(venv, clouds_yaml, cloud, "image", "delete", image_id, timeout=timeout, fmt=None)
    return image_id, back


@dataclass
class PlacementResult:
    """What a placement round trip read back."""

    provider_uuid: str
    provider_name: str
    # resource class -> inventory record as placement returned it (total, reserved, ...)
    inventories: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation_after_inventory: int = -1
    # the provider as GET /resource_providers/{uuid} showed it before deletion
    provider: dict[str, Any] = field(default_factory=dict)
    # status of GET /resource_providers/{uuid} after DELETE (404 when the delete worked)
    status_after_delete: int = 0


def placement_roundtrip_rest(
    placement_url: str,
    token: str,
    *,
    inventory: Mapping[str, int] = DEFAULT_INVENTORY,
    name: str | None = None,
    timeout: float = 30,
) -> PlacementResult:
    """Create a resource provider, set its inventory, read both back, delete it (placement REST)."""
    base = placement_url.rstrip("/")
    hdrs = {"X-Auth-Token": token, "OpenStack-API-Version": PLACEMENT_MICROVERSION}
    name = name or f"functional-rp-{uuid.uuid4().hex[:8]}"

    def call(method: str, path: str, body: Any = None, expect: Sequence[int] = (200,)) -> tuple[int, Any]:
        status, _, parsed = http_request(
            method, base + path, headers=hdrs, body=body, timeout=timeout, expect=expect
        )
        return status, parsed

    _, created = call("POST", "/resource_providers", {"name": name})
    rp_uuid = str(created["uuid"])
    try:
        body = {
            "resource_provider_generation": created["generation"],
            "inventories": {rc: {"total": total} for rc, total in inventory.items()},
        }
        _, put = call("PUT", f"/resource_providers/{rp_uuid}/inventories", body)
        _, got = call("GET", f"/resource_providers/{rp_uuid}/inventories")
        _, provider = call("GET", f"/resource_providers/{rp_uuid}")
    finally:
        call("DELETE", f"/resource_providers/{rp_uuid}", expect=(204, 404))
    status_after, _ = call("GET", f"/resource_providers/{rp_uuid}", expect=(200, 404))
    return PlacementResult(
        provider_uuid=rp_uuid,
        provider_name=str(provider["name"]),
        inventories=dict(got["inventories"]),
        generation_after_inventory=int(put["resource_provider_generation"]),
        provider=dict(provider),
        status_after_delete=status_after,
    )


def placement_roundtrip(
    venv: Path,
    clouds_yaml: Path,
    cloud: str,
    *,
    inventory: Mapping[str, int] = DEFAULT_INVENTORY,
    interface: str = "public",
    region: str | None = None,
    name: str | None = None,
    timeout: float = 60,
) -> PlacementResult:
    """Placement round trip with a token and endpoint the CLI gets from the cloud in clouds.yaml.

    `openstack token issue` gives the token, `openstack endpoint list --service placement` the URL
    (OSC has no placement commands without osc-placement, so the calls themselves are REST).
    """
    token = openstack_json(venv, clouds_yaml, cloud, "token", "issue", timeout=timeout)
    args = ["endpoint", "list", "--service", "placement", "--interface", interface]
    if region:
        args += ["--region", region]
    endpoints = openstack_json(venv, clouds_yaml, cloud, *args, timeout=timeout)
    if not endpoints:
        raise LookupError(f"no {interface} placement endpoint in the catalog of cloud {cloud!r}")
    return placement_roundtrip_rest(
        str(endpoints[0]["URL"]), str(token["id"]), inventory=inventory, name=name, timeout=timeout
    )

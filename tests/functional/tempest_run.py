"""Run tempest (from the OpenStack venv, as a subprocess) against the functional-test cloud.

The cloud has keystone, glance and placement only. tempest 46.2.0 ships API tests for identity
and image but none for placement (tempest/api has compute, identity, image, network,
object_storage and volume; placement has only a service client, used by compute tests).

Results are read back from the stestr repository tempest leaves in the workspace: its subunit
stream is decoded by python-subunit/testtools in the OpenStack venv into one JSON line per test.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Identity, image and network API tests tagged smoke, e.g.
# tempest.api.image.v2.test_versions.VersionsTest.test_list_versions[id-...,smoke]
SMOKE_REGEX = r"^tempest\.api\.(identity|image|network)\..*\[.*\bsmoke\b.*\]"
# Compute's API tests tagged smoke (servers created, rebooted, their addresses and interfaces)
COMPUTE_SMOKE_REGEX = r"^tempest\.api\.compute\..*\[.*\bsmoke\b.*\]"

# Services the cloud under test does (not) run; keystone needs no flag.
DEFAULT_SERVICES: Mapping[str, bool] = {
    "glance": True,
    "nova": False,
    "neutron": True,
    "cinder": False,
    "swift": False,
    "horizon": False,
}


@dataclass
class TempestResult:
    """Outcome of one tempest run.

    ran = passed + skipped + failed; a class skipped as a whole in setUpClass counts once, under
    the id stestr gives it ("setUpClass (tempest.api....Class)"). Expected failures count as
    passed, unexpected successes as failed.
    """

    ran: int
    passed: int
    skipped: int
    failed: int
    skip_reasons: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    passed_tests: list[str] = field(default_factory=list)
    output: str = ""
    returncode: int | None = None
    duration: float = 0.0


def write_tempest_conf(
    workspace: Path,
    *,
    auth_url: str,
    admin_username: str,
    admin_password: str,
    region: str = "RegionOne",
    admin_project: str = "admin",
    admin_domain: str = "Default",
    services: Mapping[str, bool] | None = None,
    endpoint_type: str = "public",
    image_ref: str | None = None,
    http_timeout: int = 60,
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write <workspace>/etc/tempest.conf for the keystone + glance (+ placement) cloud; return its path.

    `auth_url` is keystone's v3 URL (".../v3"). Tempest uses dynamic credentials: it creates a
    project and users per test class with the admin credentials and deletes them afterwards.
    `services` updates DEFAULT_SERVICES; `extra` adds or overrides options ({section: {key: value}}).
    """
    workspace = workspace.resolve()
    etc, logs, locks = workspace / "etc", workspace / "logs", workspace / "tempest_lock"
    for d in (etc, logs, locks):
        d.mkdir(parents=True, exist_ok=True)
    svc = {**DEFAULT_SERVICES, **(services or {})}

    conf = configparser.ConfigParser(interpolation=None)
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"log_dir": str(logs), "log_file": "tempest.log", "debug": "true"},
        "oslo_concurrency": {"lock_path": str(locks)},
        "auth": {
            "use_dynamic_credentials": "true",
            "create_isolated_networks": "false",
            "admin_username": admin_username,
            "admin_password": admin_password,
            "admin_project_name": admin_project,
            "admin_domain_name": admin_domain,
            "admin_user_domain_name": admin_domain,
            "admin_project_domain_name": admin_domain,
            "default_credentials_domain_name": admin_domain,
        },
        "identity": {
            "uri_v3": auth_url,
            "region": region,
            "v3_endpoint_type": endpoint_type,
        },
        "identity-feature-enabled": {
            "trust": "true",
            "security_compliance": "false",
            "domain_specific_drivers": "false",
        },
        "image": {
            "region": region,
            "endpoint_type": endpoint_type,
            "image_caching_enabled": "false",
            "container_formats": "bare,ami,ari,aki,ovf,ova",
            "disk_formats": "qcow2,raw,ami,ari,aki,vhd,vmdk,vdi,iso,vhdx",
        },
        "image-feature-enabled": {"manage_locations": "false", "http_store_enabled": "false"},
        "placement": {"region": region, "endpoint_type": endpoint_type},
        "network": {"region": region, "endpoint_type": endpoint_type},
        "service_available": {name: "true" if up else "false" for name, up in svc.items()},
        "validation": {"run_validation": "false"},
        "service-clients": {"http_timeout": str(http_timeout)},
    }
    if image_ref:
        sections["compute"] = {"image_ref": image_ref, "image_ref_alt": image_ref}
    for section, opts in (extra or {}).items():
        sections.setdefault(section, {}).update(opts)
    for section, opts in sections.items():
        if section != "DEFAULT":
            conf.add_section(section)
        for key, value in opts.items():
            conf.set(section, key, value)

    path = etc / "tempest.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        conf.write(f)
    return path


def run_tempest(
    venv: Path,
    workspace: Path,
    regex: str = SMOKE_REGEX,
    timeout: float = 900,
    *,
    concurrency: int = 2,
    exclude_regex: str | None = None,
) -> TempestResult:
    """`tempest run --regex REGEX [--exclude-regex X] --concurrency N` in `workspace`; parse the results.

    The workspace needs etc/tempest.conf (write_tempest_conf). `tempest init` is not used: it
    refuses a non-empty directory and registers the workspace in ~/.tempest/workspace.yaml;
    `tempest run --config-file` writes the .stestr.conf it needs itself. A failing test does not
    raise (see TempestResult.failed); a timeout or a run that recorded nothing raises RuntimeError.
    """
    workspace = workspace.resolve()
    conf = workspace / "etc" / "tempest.conf"
    if not conf.is_file():
        raise FileNotFoundError(f"{conf} missing: call write_tempest_conf first")
    env = {
        **os.environ,
        "TEMPEST_CONFIG_DIR": str(conf.parent),
        "TEMPEST_CONFIG": conf.name,
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [
        str(venv / "bin" / "tempest"), "run", "--config-file", str(conf),
        "--regex", regex, "--concurrency", str(concurrency),
    ]  # fmt: skip
    if exclude_regex:
        cmd += ["--exclude-regex", exclude_regex]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        raise RuntimeError(f"tempest run timed out after {timeout} s; output so far:\n{out[-5000:]}") from e
    duration = time.monotonic() - start
    output = proc.stdout + proc.stderr

    result = parse_records(_last_run_records(venv, workspace, env, timeout=120))
    result.output, result.returncode, result.duration = output, proc.returncode, duration
    if result.ran == 0:
        raise RuntimeError(f"tempest ran no test (rc {proc.returncode}):\n{output[-5000:]}")
    return result


# Runs in the OpenStack venv: reads a subunit v2 stream on stdin, prints one JSON object per test.
_SUBUNIT_TO_JSON = """
import json, sys
import subunit, testtools

def emit(test):
    details = {}
    for name in ("reason", "traceback"):
        if name in test["details"]:
            details[name] = test["details"][name].as_text()
    print(json.dumps({"id": test["id"], "status": test["status"], **details}))

result = testtools.StreamToDict(emit)
result.startTestRun()
subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
result.stopTestRun()
"""


def _last_run_records(
    venv: Path, workspace: Path, env: Mapping[str, str], *, timeout: float
) -> list[dict[str, str]]:
    """The tests of the last run in the workspace's stestr repository: id, status, reason/traceback."""
    try:
        subunit = subprocess.run(
            [str(venv / "bin" / "stestr"), "last", "--subunit"],
            cwd=workspace, env=dict(env), capture_output=True, timeout=timeout, check=True,
        )  # fmt: skip
        decoded = subprocess.run(
            [str(venv / "bin" / "python"), "-c", _SUBUNIT_TO_JSON],
            input=subunit.stdout, env=dict(env), capture_output=True, timeout=timeout, check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"reading tempest results failed: {e.stderr.decode(errors='replace')}") from e
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"reading tempest results timed out after {timeout} s") from e
    return [json.loads(line) for line in decoded.stdout.decode().splitlines() if line.startswith("{")]


def parse_records(records: Iterable[Mapping[str, str]]) -> TempestResult:
    """Counts, skip reasons and failure details from per-test records (testtools status names).

    success/xfail -> passed; skip -> skipped; anything else (fail, uxsuccess, inprogress: a worker
    that died mid-test) -> failed.
    """
    passed: list[str] = []
    skips: dict[str, str] = {}
    failures: dict[str, str] = {}
    for rec in records:
        test_id, status = rec["id"], rec["status"]
        if status in ("success", "xfail"):
            passed.append(test_id)
        elif status == "skip":
            skips[test_id] = rec.get("reason", "").strip()
        else:
            failures[test_id] = f"{status}: {rec.get('traceback', '').strip()}"
    return TempestResult(
        ran=len(passed) + len(skips) + len(failures),
        passed=len(passed),
        skipped=len(skips),
        failed=len(failures),
        skip_reasons=skips,
        failures=failures,
        passed_tests=sorted(passed),
    )

"""Run tempest (from the OpenStack venv, as a subprocess) against the functional-test cloud.

The cloud has keystone, glance and placement only. tempest 46.2.0 ships API tests for identity
and image but none for placement (tempest/api has compute, identity, image, network,
object_storage and volume; placement has only a service client, used by compute tests).

Results are read back from the stestr repository tempest leaves in the workspace, converted to
JUnit XML by subunit2junitxml (python-subunit, in the OpenStack venv) and parsed with the stdlib.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Identity and image API tests tagged smoke, e.g.
# tempest.api.image.v2.test_versions.VersionsTest.test_list_versions[id-...,smoke]
SMOKE_REGEX = r"^tempest\.api\.(identity|image)\..*\[.*\bsmoke\b.*\]"

# Services the cloud under test does (not) run; keystone needs no flag.
DEFAULT_SERVICES: Mapping[str, bool] = {
    "glance": True,
    "nova": False,
    "neutron": False,
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
) -> TempestResult:
    """`tempest run --regex REGEX --concurrency N` in `workspace`; parse the results.

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

    junit = _last_run_junit(venv, workspace, env, timeout=120)
    result = parse_junit(junit)
    result.output, result.returncode, result.duration = output, proc.returncode, duration
    if result.ran == 0:
        raise RuntimeError(f"tempest ran no test (rc {proc.returncode}):\n{output[-5000:]}")
    return result


def _last_run_junit(venv: Path, workspace: Path, env: Mapping[str, str], *, timeout: float) -> str:
    """The last run in the workspace's stestr repository, as JUnit XML."""
    try:
        subunit = subprocess.run(
            [str(venv / "bin" / "stestr"), "last", "--subunit"],
            cwd=workspace, env=dict(env), capture_output=True, timeout=timeout, check=True,
        )  # fmt: skip
        junit = subprocess.run(
            [str(venv / "bin" / "subunit2junitxml")],
            input=subunit.stdout, env=dict(env), capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"stestr last failed: {e.stderr.decode(errors='replace')}") from e
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"reading tempest results timed out after {timeout} s") from e
    # subunit2junitxml exits 1 when the stream has failures; the XML is complete either way.
    if not junit.stdout.strip():
        raise RuntimeError(f"subunit2junitxml produced nothing: {junit.stderr.decode(errors='replace')}")
    return junit.stdout.decode()


def parse_junit(xml_text: str) -> TempestResult:
    """Counts, skip reasons and failure details from subunit2junitxml output."""
    root = ET.fromstring(xml_text)
    passed: list[str] = []
    skips: dict[str, str] = {}
    failures: dict[str, str] = {}
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test_id = f"{classname}.{name}" if classname else name
        skipped = case.find("skipped")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if skipped is not None:
            skips[test_id] = (skipped.text or skipped.get("message") or "").strip()
        elif failure is not None:
            failures[test_id] = (failure.text or failure.get("message") or "").strip()
        else:
            passed.append(test_id)
    return TempestResult(
        ran=len(passed) + len(skips) + len(failures),
        passed=len(passed),
        skipped=len(skips),
        failed=len(failures),
        skip_reasons=skips,
        failures=failures,
        passed_tests=sorted(passed),
    )

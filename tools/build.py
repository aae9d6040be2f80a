"""Stage, validate and pack every charm of the collection.

For each ``charms/<name>/`` this writes ``build/<name>/``:

- ``charmcraft.yaml``: the top-level charmcraft.yaml merged with the charm's own
  (``openstack_charms.testing.merged_charmcraft``, the same merge the tests use);
- ``src/``: the charm's code and templates;
- ``lib/openstack_charms``: the shared library, without its test helpers;
- ``lib/charms/...``: the interface libraries from ``libs/charms`` that the
  charm, the shared library or the charm's wired handlers import;
- ``requirements.txt``: derived, not kept by hand: the runtime
  (``wiring.RUNTIME``) plus what the handlers of the endpoints the merged
  charmcraft.yaml declares need (``openstack_charms.relations.wiring``, with
  the charm class's ``own_wiring``). Every pin must equal the one in
  requirements-dev.txt, which is what the tests ran with.

The merged charmcraft.yaml is then validated with charmcraft's own models and
this collection's stricter schema (``tools/charm_schema.py``) and expanded with
``charmcraft expand-extensions``. The staged charm is then imported in a venv
holding only its requirements.txt (constrained by requirements.lock; one venv
per distinct set, kept in ``.tox/charm-envs/<hash>/`` and reused while the set
and the lock are unchanged), with only the staged ``src/`` and ``lib/`` on the
path: the ``charm`` module, every other module of ``src/``, and every module
the charm's wired handlers import lazily. Any of these failures exits 1.

Finally ``charmcraft pack`` runs in ``build/<name>/`` and the packed charm is
copied to ``build/<name>.charm`` (the path bundles/openstack.yaml deploys).
Packing needs snapd and LXD (or, with ``--destructive-mode``, an Ubuntu host
of the charm's base); where this machine cannot pack, the reason is printed
and the build still succeeds, having produced and validated the staged files.

Usage: ``python tools/build.py [--destructive-mode] [--no-pack] [NAME ...]``
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
LIBS = REPO / "libs"
CHARMS = REPO / "charms"
BUILD = REPO / "build"
REQUIREMENTS_DEV = REPO / "requirements-dev.txt"
LOCK = REPO / "requirements.lock"
# Outside build/, which every build wipes: a venv costs seconds to make, and is
# reused for as long as its requirements and the lock are unchanged.
CHARM_ENVS = REPO / ".tox" / "charm-envs"
sys.path[:0] = [str(LIBS), str(pathlib.Path(__file__).resolve().parent)]

import yaml  # noqa: E402
from charm_schema import charmcraft_errors, strict_errors  # noqa: E402
from openstack_charms.relations import wiring  # noqa: E402
from openstack_charms.testing import load_charm_class, merged_charmcraft  # noqa: E402
from packaging.requirements import InvalidRequirement, Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

SHARED = "openstack_charms"
# Test helpers import ops.testing, which charms do not ship.
SHARED_EXCLUDED = ("testing", "sandbox")
# What charmcraft prints when this host cannot build at all (as opposed to a
# build that ran and failed): no snapd / LXD / Multipass, or a host that
# --destructive-mode refuses.
CANNOT_BUILD_HERE = (
    "snapd",
    "lxd",
    "multipass",
    "cannot be performed on this",
    "not supported on this environment",
    "no such file or directory: 'lxc'",
)


class BuildError(Exception):
    """A charm cannot be staged or its metadata is invalid."""


def _python_files(root: pathlib.Path) -> Iterable[pathlib.Path]:
    return (p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _is_charm_lib(module: str | None) -> bool:
    return module is not None and (module == "charms" or module.startswith("charms."))


def _charm_lib_imports(files: Iterable[pathlib.Path]) -> set[str]:
    """Dotted names of ``charms.*`` modules imported anywhere in ``files``."""
    modules: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names if alias.name.startswith("charms."))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_charm_lib(node.module):
                modules.add(str(node.module))
                # `from charms.x.v0 import lib` imports the module charms.x.v0.lib.
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _lib_file(module: str) -> pathlib.Path | None:
    parts = module.split(".")
    candidate = LIBS.joinpath(*parts).with_suffix(".py")
    return candidate if candidate.is_file() else None


def stage_charm_libs(
    sources: Sequence[pathlib.Path], lib_dir: pathlib.Path, modules: Iterable[str] = ()
) -> list[str]:
    """Copy every libs/charms module imported from ``sources`` or named in ``modules`` (transitively)."""
    staged: list[str] = []
    pending = [*_charm_lib_imports(sources), *(m for m in modules if _is_charm_lib(m))]
    done: set[str] = set()
    while pending:
        module = pending.pop()
        if module in done:
            continue
        done.add(module)
        path = _lib_file(module)
        if path is None:
            continue
        target = lib_dir / path.relative_to(LIBS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        staged.append(module)
        pending.extend(_charm_lib_imports([path]))
    return sorted(staged)


def charm_wiring(name: str, meta: Mapping[str, Any]) -> dict[str, wiring.Wire]:
    """Endpoint -> wire of the charm: its declared endpoints, with its class's ``own_wiring``."""
    try:
        charm_class = load_charm_class(name)
    except Exception as e:
        # The class is needed only for own_wiring, but a charm whose module does not
        # even import here, where every dependency is installed, cannot be built.
        raise BuildError(f"{name}: charms/{name}/src/charm.py does not load: {type(e).__name__}: {e}") from e
    own: Mapping[str, wiring.Wire] = getattr(charm_class, "own_wiring", {})
    wired = wiring.wires(wiring.declared(meta), own)
    applier: wiring.Wire | None = getattr(charm_class, "applier_wire", None)
    if applier is not None:
        # not an endpoint: what the charm's kind of workload (Pebble, the host) imports and needs
        wired["(applier)"] = applier
    return wired


def _pins(lines: Iterable[str], source: str) -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as e:
            raise BuildError(f"{source}: {line!r} is not a requirement: {e}") from e
        pins[canonicalize_name(requirement.name)] = requirement
    return pins


def check_pins(requirements: Sequence[str], dev: pathlib.Path = REQUIREMENTS_DEV) -> None:
    """Raise unless every requirement is pinned exactly as in ``dev`` (what the tests ran with)."""
    tested = _pins(dev.read_text().splitlines(), dev.name)
    problems: list[str] = []
    asked: dict[str, Requirement] = {}
    for line in requirements:
        requirement = next(iter(_pins([line], "the wiring").values()))
        name = canonicalize_name(requirement.name)
        pin = tested.get(name)
        if name in asked:
            # two handlers pinning one package differently: pip would refuse the file
            problems.append(f"{asked[name]} and {requirement} both asked for")
            continue
        asked[name] = requirement
        if pin is None:
            problems.append(f"{requirement} is not in {dev.name}: the tests did not run with it")
        elif len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "==":
            problems.append(f"{requirement} is not pinned with ==; {dev.name} has {pin}")
        elif (requirement.specifier, requirement.extras, requirement.marker) != (
            pin.specifier,
            pin.extras,
            pin.marker,
        ):
            problems.append(f"{requirement} (from the wiring) differs from {pin} in {dev.name}")
    if problems:
        raise BuildError("; ".join(problems))


REQUIREMENTS_HEADER = (
    "# Generated by tools/build.py from the endpoints charmcraft.yaml declares\n"
    "# (openstack_charms.relations.wiring); do not edit.\n"
)


def stage(name: str, root: pathlib.Path = BUILD) -> pathlib.Path:
    """Write ``<root>/<name>/`` (``build/<name>/`` by default) and return it."""
    charm_dir = CHARMS / name
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    meta = merged_charmcraft(charm_dir)
    (out / "charmcraft.yaml").write_text(
        f"# Generated by tools/build.py from charmcraft.yaml and charms/{name}/charmcraft.yaml.\n"
        + yaml.safe_dump(meta, sort_keys=False, width=100)
    )
    if not (charm_dir / "src" / "charm.py").is_file():
        raise BuildError(f"{name}: charms/{name}/src/charm.py is missing")
    shutil.copytree(charm_dir / "src", out / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wired = charm_wiring(name, meta)

    lib = out / "lib"
    shutil.copytree(
        LIBS / SHARED,
        lib / SHARED,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *SHARED_EXCLUDED),
    )
    sources = [*_python_files(out / "src"), *_python_files(lib / SHARED)]
    libs = stage_charm_libs(sources, lib, (m for w in wired.values() for m in w.modules))

    requirements = wiring.requirements(wired)
    try:
        check_pins(requirements)
    except BuildError as e:
        raise BuildError(f"{name}: requirements.txt: {e}") from e
    (out / "requirements.txt").write_text(REQUIREMENTS_HEADER + "".join(f"{r}\n" for r in requirements))
    what = ", ".join([f"lib/{SHARED}", *libs, f"requirements.txt ({' '.join(requirements)})"])
    print(f"{name}: staged {_shown(out)} (src, {what})")
    return out


def _shown(path: pathlib.Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def validate(name: str, out: pathlib.Path) -> None:
    """Validate the merged charmcraft.yaml with charmcraft's code and our schema."""
    meta = yaml.safe_load((out / "charmcraft.yaml").read_text())
    errors = charmcraft_errors(meta) + strict_errors(meta, name=name)
    if errors:
        raise BuildError(f"{name}: invalid merged charmcraft.yaml:\n  " + "\n  ".join(errors))
    result = _charmcraft(["expand-extensions"], out)
    if result.returncode != 0:
        raise BuildError(f"{name}: charmcraft expand-extensions failed:\n{_last_lines(result.stdout)}")
    expanded = yaml.safe_load(result.stdout)
    if not isinstance(expanded, dict) or expanded.get("name") != name:
        raise BuildError(f"{name}: charmcraft expand-extensions printed no project named {name}")
    print(f"{name}: charmcraft.yaml valid (charmcraft models, expand-extensions, strict schema)")
    check_imports(name, out)


def _requirement_lines(requirements_txt: pathlib.Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in requirements_txt.read_text().splitlines())
    return sorted({line for line in lines if line})


def charm_env(requirements_txt: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """The venv holding only these requirements (made if needed) and whether it was just made."""
    key = hashlib.sha256()
    # The interpreter too: a venv links to the Python that made it.
    for part in ("\n".join(_requirement_lines(requirements_txt)), LOCK.read_text(), sys.version):
        key.update(part.encode())
        key.update(b"\0")
    env = CHARM_ENVS / key.hexdigest()[:16]
    python = env / "bin" / "python"
    # Written last: an interrupted install leaves no marker and is redone, not reused.
    marker = env / "installed-requirements.txt"
    if marker.is_file() and python.exists():
        return env, False
    if env.exists():
        shutil.rmtree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(env)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
            str(requirements_txt),
            "-c",
            str(LOCK),
        ],
    ]
    for step in steps:
        result = subprocess.run(
            step, env=_clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            shutil.rmtree(env, ignore_errors=True)
            raise BuildError(
                f"cannot make the venv of {_shown(requirements_txt)} ({' '.join(step[:4])} ...):\n"
                + _last_lines(result.stderr or result.stdout, 12)
            )
    shutil.copy2(requirements_txt, marker)
    return env, True


def _clean_env(**extra: str) -> dict[str, str]:
    # The build's own PYTHONPATH / virtualenv must not leak into the charm's interpreter.
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def src_modules(src: pathlib.Path) -> list[str]:
    """Dotted names of the modules of a charm's ``src/``: ``charm`` first."""
    names: set[str] = set()
    for path in _python_files(src):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.add(".".join(parts))
    return sorted(names, key=lambda module: (module != "charm", module))


# Run by the charm's venv, so it can import nothing of the build's. Not only
# ImportError: a module that raises or exits while importing breaks every hook too.
_IMPORT_EACH = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as e:
        print(f"{name}: {type(e).__name__}: " + " ".join(str(e).split()))
"""


def import_failures(python: pathlib.Path | str, out: pathlib.Path, modules: Sequence[str]) -> list[str]:
    """``module: error`` for each of ``modules`` that ``python`` cannot import from the staged tree."""
    # src/ first, as when Juju runs src/charm.py; -P keeps the working directory off
    # sys.path and -s the user's site-packages; no bytecode is written into what gets packed.
    out = out.resolve()
    env = _clean_env(
        PYTHONPATH=os.pathsep.join([str(out / "src"), str(out / "lib")]), PYTHONDONTWRITEBYTECODE="1"
    )
    result = subprocess.run(
        [str(python), "-s", "-P", "-c", _IMPORT_EACH, *modules],
        cwd=out,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    failures = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 and not failures:
        failures.append(f"(the interpreter failed):\n{_last_lines(result.stderr)}")
    return failures


def check_imports(name: str, out: pathlib.Path) -> None:
    """Import the staged charm in a venv holding only its requirements.txt, as a deployed unit would."""
    started = time.monotonic()
    meta = yaml.safe_load((out / "charmcraft.yaml").read_text())
    wired = charm_wiring(name, meta)
    own = src_modules(out / "src")
    if "charm" not in own:
        raise BuildError(f"{name}: {_shown(out)}/src/charm.py is missing")
    wired_modules = [m for m in dict.fromkeys(m for w in wired.values() for m in w.modules) if m not in own]
    try:
        env, made = charm_env(out / "requirements.txt")
    except BuildError as e:
        raise BuildError(f"{name}: {e}") from e
    failures = import_failures(env / "bin" / "python", out, [*own, *wired_modules])
    if failures:
        raise BuildError(
            f"{name}: does not import with only its requirements.txt ({_shown(env)}):\n    "
            + "\n    ".join(failures)
        )
    print(
        f"{name}: imports with only requirements.txt, src/ and lib/ (venv {_shown(env)}, "
        f"{'made' if made else 'reused'}): {', '.join(own)}; wired: {', '.join(wired_modules) or 'none'} "
        f"[{time.monotonic() - started:.1f}s]"
    )


def _charmcraft(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    charmcraft = shutil.which("charmcraft") or str(pathlib.Path(sys.executable).with_name("charmcraft"))
    env = {**os.environ, "CRAFT_VERBOSITY_LEVEL": "brief"}
    # Without it platformdirs warns on every run and the warning hides charmcraft's message.
    env.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    return subprocess.run(
        [charmcraft, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if args[0] == "expand-extensions" else subprocess.STDOUT,
        text=True,
        check=False,
    )


def _last_lines(output: str, count: int = 6) -> str:
    lines = [line for line in output.splitlines() if line.strip() and "RuntimeDirWarning" not in line]
    lines = [line for line in lines if "return Path(self.user_runtime_dir)" not in line]
    return "\n".join("    " + line for line in lines[-count:])


def _cannot_build_here(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in CANNOT_BUILD_HERE)


def pack(name: str, out: pathlib.Path, *, destructive: bool) -> str | None:
    """Pack the staged charm; the reason when this machine cannot, raise when the build failed."""
    attempts = [["pack"]]
    if destructive:
        attempts.append(["pack", "--destructive-mode"])
    reasons: list[str] = []
    for args in attempts:
        for old in out.glob("*.charm"):
            old.unlink()
        result = _charmcraft(args, out)
        packed = sorted(out.glob("*.charm"))
        if result.returncode == 0 and packed:
            shutil.copy2(packed[0], BUILD / f"{name}.charm")
            print(f"{name}: packed build/{name}.charm (charmcraft {' '.join(args)})")
            return None
        if not _cannot_build_here(result.stdout):
            raise BuildError(f"{name}: charmcraft {' '.join(args)} failed:\n{_last_lines(result.stdout, 20)}")
        reasons.append(
            f"charmcraft {' '.join(args)} cannot run on this machine:\n{_last_lines(result.stdout)}"
        )
    if not destructive:
        reasons.append(
            "charmcraft pack --destructive-mode not tried: it installs build packages on this host "
            "(pass --destructive-mode to allow it, on an Ubuntu 24.04 host)"
        )
    return "\n  ".join(reasons)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the charms named on the command line, or all of them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("charms", nargs="*", help="charm names (default: every charms/*/)")
    parser.add_argument("--destructive-mode", action="store_true", help="also try packing on this host")
    parser.add_argument("--no-pack", action="store_true", help="stage and validate only")
    args = parser.parse_args(argv)

    names = args.charms or sorted(p.name for p in CHARMS.iterdir() if (p / "charmcraft.yaml").is_file())
    if not names:
        print("no charms found under charms/", file=sys.stderr)
        return 1
    failures: list[str] = []
    not_packed: dict[str, str] = {}
    for name in names:
        try:
            out = stage(name)
            validate(name, out)
            if not args.no_pack:
                reason = pack(name, out, destructive=args.destructive_mode)
                if reason:
                    not_packed[name] = reason
                    print(f"{name}: NOT PACKED:\n  {reason}")
        except (BuildError, OSError, yaml.YAMLError) as e:
            failures.append(name)
            print(f"{name}: FAILED: {e}", file=sys.stderr)

    valid = len(names) - len(failures)
    packed = 0 if args.no_pack else valid - len(not_packed)
    print(f"build: {valid} of {len(names)} charms staged and validated, {packed} packed")
    if not_packed:
        print("build: packing needs snapd with LXD, or --destructive-mode on an Ubuntu 24.04 host; see above")
    if failures:
        print(f"build: FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

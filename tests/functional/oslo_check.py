"""Check an oslo.config file against the options a real OpenStack service registers.

Run it with the Python of a venv where the service is installed::

    <openstack venv>/bin/python oslo_check.py --namespace keystone --namespace oslo.log ... FILE

Two checks, one line per problem on stdout, exit status 1 when there is any:

1. names: oslo-config-validator's own check (its code, in process): every
   section and option of the file must be known in the given namespaces of the
   ``oslo.config.opts`` entry points;
2. values: every namespace's options are registered on a fresh ``ConfigOpts``,
   the file is parsed, and every option the file sets is read back, so a value
   of the wrong type or out of range fails naming the option.  Groups whose
   options are registered at run time are type-checked too: the auth plugin's
   options where a section sets ``auth_type`` (as keystonemiddleware does), and
   glance's store groups named by ``enabled_backends`` plus its reserved stores
   (as glance does).  An option set twice, a deprecated name, an option
   deprecated for removal and a required option not set are problems as well; a
   keystoneauth plugin's required options only where the section names that plugin
   (nova lists the password plugin's in every client section, and registers them
   only for the ``auth_type`` set).

On success it prints ``N options checked in M sections``.  Notes on groups
excluded from the checks go to stderr.

The validator and generator helpers used here are oslo.config's own
(``oslo_config.validator._validate``, ``oslo_config.generator._list_opts``), so
the result is what ``oslo-config-validator`` and ``oslo-config-generator``
see; they, and the registries of ``ConfigOpts`` read here, are private names of
the oslo.config pinned by the functional requirements.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any

from oslo_config import cfg, generator, validator

#: messages of oslo_config.validator, by what they mean
_UNKNOWN = "%s/%s is not part of the sample config"
_DEPRECATED_NAME = "Deprecated opt %s/%s found"
#: glance's stores that exist whatever enabled_backends says (glance.common.wsgi_app)
_GLANCE_RESERVED_STORES = {"os_glance_staging_store": "file", "os_glance_tasks_store": "file"}


ERROR = "error"
WARNING = "warning"


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one option of the file: an error, or a warning (a deprecation)."""

    section: str
    option: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.severity}: [{self.section}] {self.option}: {self.message}"


class _Records(logging.Handler):
    """Collects the validator's log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def unknown_namespaces(namespaces: Iterable[str]) -> list[str]:
    """Namespaces that no installed package declares (stevedore would ignore them)."""
    known = {e.name for e in entry_points(group="oslo.config.opts")}
    return sorted(set(namespaces) - known)


def check_names(path: str, namespaces: Sequence[str], exclude: Sequence[str]) -> list[Problem]:
    """oslo-config-validator's check: unknown sections and options are problems."""
    argv = ["--input-file", path]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    for group in exclude:
        argv += ["--exclude-group", group]
    conf = cfg.ConfigOpts()
    validator._register_cli_opts(conf)
    conf(argv, project="oslo-check", default_config_files=[], default_config_dirs=[], use_env=False)
    handler = _Records()
    root = logging.getLogger()
    # the validator logs its findings: collect them instead of printing them twice
    saved, root.handlers = root.handlers, [handler]
    try:
        validator._validate(conf)
    finally:
        root.handlers = saved
    problems = []
    for record in handler.records:
        if record.msg == _UNKNOWN and isinstance(record.args, tuple):
            section, option = record.args
            problems.append(Problem(str(section), str(option), f"unknown option in {', '.join(namespaces)}"))
        elif record.msg == _DEPRECATED_NAME and isinstance(record.args, tuple):
            section, option = record.args
            problems.append(Problem(str(section), str(option), "deprecated option name", WARNING))
    return problems


def _group_name(group: Any) -> str:
    if group is None:
        return "DEFAULT"
    return group.name if isinstance(group, cfg.OptGroup) else str(group)


def _register(conf: cfg.ConfigOpts, group: str, opts: Iterable[cfg.Opt]) -> None:
    for opt in opts:
        # two namespaces listing one name differently: the first one stands, as in the generator
        with contextlib.suppress(cfg.DuplicateOptError):
            conf.register_opt(opt, group=None if group == "DEFAULT" else group)


def registered(conf: cfg.ConfigOpts, group: str) -> dict[str, cfg.Opt]:
    """The options registered in ``group``, by dest and by name."""
    if group == "DEFAULT":
        infos = conf._opts
    else:
        found = conf._groups.get(group)
        if found is None:
            return {}
        infos = found._opts
    opts: dict[str, cfg.Opt] = {}
    for info in infos.values():
        opt: cfg.Opt = info["opt"]
        opts[opt.dest] = opt
        opts[opt.name] = opt
    return opts


def _deprecated_names(conf: cfg.ConfigOpts) -> dict[tuple[str, str], tuple[str, str]]:
    """(old group, old name) -> (group, dest) of the option that replaced it."""
    names: dict[tuple[str, str], tuple[str, str]] = {}
    groups = ["DEFAULT", *conf._groups]
    for group in groups:
        for opt in set(registered(conf, group).values()):
            for old in opt.deprecated_opts:
                old_group = old.group or group
                old_name = old.name or opt.dest
                names[(old_group, old_name.replace("-", "_"))] = (group, opt.dest)
    return names


def _auth_plugin_option_names() -> set[str]:
    """Every option some keystoneauth plugin takes from a config section."""
    from keystoneauth1 import loading

    loaders = loading.get_available_plugin_loaders()
    return {opt.dest for loader in loaders.values() for opt in loader.get_options()}


def _read(conf: cfg.ConfigOpts, group: str, dest: str) -> Any:
    return conf[dest] if group == "DEFAULT" else conf[group][dest]


def _parse(conf: cfg.ConfigOpts, path: str) -> None:
    conf([], project="oslo-check", default_config_files=[path], default_config_dirs=[], use_env=False)


def register_dynamic_groups(
    conf: cfg.ConfigOpts, sections: dict[str, dict[str, list[str]]], namespaces: Sequence[str]
) -> list[Problem]:
    """Register the options services add at run time, as the services do."""
    problems: list[Problem] = []
    for section, options in sections.items():
        if "auth_type" not in options or "auth_type" not in registered(conf, section):
            continue
        # keystonemiddleware and keystoneauth register the plugin's options once auth_type is read
        from keystoneauth1 import exceptions, loading

        plugin = options["auth_type"][-1]
        try:
            loader = loading.get_plugin_loader(plugin)
        except exceptions.NoMatchingPlugin:
            problems.append(Problem(section, "auth_type", f"no keystoneauth plugin named {plugin!r}"))
            continue
        plugin_opts = loading.get_auth_plugin_conf_options(loader)
        _register(conf, section, plugin_opts)
        # registered after parsing, so oslo.config never checks them: the plugin would fail to load
        for opt in plugin_opts:
            with contextlib.suppress(Exception):  # a bad value: reported with the other values
                if opt.required and _read(conf, section, opt.dest) is None:
                    problems.append(Problem(section, opt.dest, f"required by auth_type {plugin}, not set"))
    if "glance.multi_store" in namespaces and "enabled_backends" in registered(conf, "DEFAULT"):
        from glance_store import multi_backend

        try:
            backends = dict(conf.enabled_backends or {})
        except (ValueError, cfg.Error):
            # reported with the other values; glance would not start, nor register its stores
            return problems
        stores = {**backends, **_GLANCE_RESERVED_STORES}
        drivers = multi_backend._list_driver_opts()
        for name, kind in stores.items():
            if kind not in drivers:
                problems.append(Problem("DEFAULT", "enabled_backends", f"{name}: no glance_store {kind!r}"))
        # glance's own registration (glance.common.wsgi_app): the reserved stores get a file template
        multi_backend.register_store_opts(conf, reserved_stores=dict(_GLANCE_RESERVED_STORES))
        # and each store, once created, adds the options every backend has (store_description, weight)
        for name, kind in stores.items():
            store = multi_backend._load_multi_store(None, kind, False) if kind in drivers else None
            _register(conf, name, getattr(store, "MULTI_BACKEND_OPTIONS", None) or ())
    return problems


def check_values(
    path: str, namespaces: Sequence[str], exclude: Sequence[str]
) -> tuple[list[Problem], list[str], int, int]:
    """Read back every option the file sets: problems, notes, options and sections checked."""
    conf = cfg.ConfigOpts()
    for _namespace, listing in generator._list_opts(list(namespaces)):
        for group, opts in listing:
            name = _group_name(group)
            if isinstance(group, cfg.OptGroup) and name not in conf._groups:
                conf.register_group(group)
            _register(conf, name, opts)
    sections: dict[str, dict[str, list[str]]] = {}
    cfg.ConfigParser(path, sections).parse()
    plugin_options = _auth_plugin_option_names()
    # oslo.config stops at the first missing required option: they are checked below instead
    required = []
    for group in ["DEFAULT", *conf._groups]:
        loads_plugin = "auth_type" in registered(conf, group)
        for opt in set(registered(conf, group).values()):
            if opt.required:
                opt.required = False
                # a plugin's option listed for the sample: the service registers the auth_type's own
                # (checked with them in register_dynamic_groups), and none without an auth_type
                if not (loads_plugin and opt.dest in plugin_options):
                    required.append((group, opt))
    _parse(conf, path)
    # options registered after parsing read the parsed file too, as in the services
    problems = register_dynamic_groups(conf, sections, namespaces)
    for group, opt in required:
        try:
            missing = _read(conf, group, opt.dest) is None
        except Exception:  # a bad value: reported below, with the option
            missing = False
        if missing:
            problems.append(Problem(group, opt.dest, "required, not set"))
    deprecated = _deprecated_names(conf)
    notes: list[str] = []
    checked = 0
    checked_sections = 0
    for section, options in sections.items():
        known = registered(conf, section)
        if section in exclude and not known:
            notes.append(f"[{section}] not type-checked: excluded, and no service registers options there")
            continue
        checked_sections += 1
        for option, values in options.items():
            key = option.replace("-", "_")
            opt = known.get(key) or known.get(option)
            group = section
            if opt is None and (section, key) in deprecated:
                group, dest = deprecated[(section, key)]
                problems.append(Problem(section, option, f"deprecated name of [{group}] {dest}", WARNING))
                opt = registered(conf, group)[dest]
            elif opt is None:
                problems.append(Problem(section, option, "unknown option"))
                continue
            if len(values) > 1 and not opt.multi:
                problems.append(Problem(section, option, f"set {len(values)} times; only the last counts"))
            if opt.deprecated_for_removal:
                reason = " ".join((opt.deprecated_reason or "").split())
                message = f"deprecated for removal: {reason}" if reason else "deprecated for removal"
                problems.append(Problem(section, option, message, WARNING))
            try:
                _read(conf, group, opt.dest)
            except Exception as error:  # every oslo.config error: type, range, choices, substitution
                # ConfigFileValueError: "Value for option X from <location> is not valid: <why>"
                why = str(error).rsplit(" is not valid: ", 1)[-1]
                problems.append(Problem(section, option, f"invalid value {values[-1]!r}: {why}"))
                continue
            checked += 1
    return problems, notes, checked, checked_sections


def main(argv: Sequence[str] | None = None) -> int:
    """Check one file; print problems (or a summary) and return the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--namespace", action="append", required=True, help="oslo.config.opts namespace")
    parser.add_argument("--exclude-group", action="append", default=[], help="dynamically named group")
    parser.add_argument("--fatal-warnings", action="store_true", help="deprecations fail the check too")
    parser.add_argument("config_file")
    args = parser.parse_args(argv)
    namespaces: list[str] = args.namespace
    exclude: list[str] = args.exclude_group
    # only errors reach stderr: oslo.config's own deprecation notices are reported as warnings here
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    # store drivers whose extra dependencies are not installed (cinder: os_brick) fail to load, as in
    # glance; a backend of such a type is reported as an enabled_backends problem instead
    logging.getLogger("stevedore").setLevel(logging.CRITICAL)

    missing = unknown_namespaces(namespaces)
    if missing:
        for namespace in missing:
            print(f"unknown namespace {namespace!r} (no oslo.config.opts entry point)")
        return 1
    problems = set(check_names(args.config_file, namespaces, exclude))
    value_problems, notes, checked, sections = check_values(args.config_file, namespaces, exclude)
    # one line per option and kind: the validator's words win
    reported = {(p.section, p.option, p.severity) for p in problems}
    problems |= {p for p in value_problems if (p.section, p.option, p.severity) not in reported}
    for note in notes:
        print(note, file=sys.stderr)
    for problem in sorted(problems):
        print(problem)
    failed = [p for p in problems if p.severity == ERROR or args.fatal_warnings]
    if failed:
        return 1
    print(f"{checked} options checked in {sections} sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())

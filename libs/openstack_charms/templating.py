"""jinja2 rendering, the charm's own templates first and the shared parts after, safe per file format.

Values reach templates from relation data (an ingress URL, a region, a
password) and from config. Every ``{{ expression }}`` goes through the
format's guard, here and nowhere else, so that no value can add a line, a
section or an interpolation to the file it lands in:

- ``oslo``: oslo.config ini (``*.conf``): no line breaks or control
  characters; ``$`` doubled (oslo.config would interpolate ``$name``).
- ``pyini``: Python configparser files (paste pipelines, ``logging.conf``): no
  line breaks or control characters; ``%`` doubled (configparser interpolation).
- ``uwsgi``: uwsgi ini: no line breaks or control characters, and none of
  ``%``, ``$``, ``@`` (uwsgi expands magic variables, environment and files).
- ``shell``: shell scripts (``*.sh``): only characters that need no quoting
  (letters, digits and ``_.:/,=+@[]-``), so a value is one word and runs nothing.
- ``text``: anything goes (PEM bundles, key files): for values that are the
  whole file, never for files with structure.

A refused value raises :class:`UnsafeValue`; the base charm makes it a Blocked
status naming the file, without the value (it may be a secret).
"""

from __future__ import annotations

import functools
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import jinja2

LIBRARY_TEMPLATES = pathlib.Path(__file__).parent / "templates"

Format = Literal["oslo", "pyini", "uwsgi", "shell", "text"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeValue(ValueError):
    """A value cannot be written into a file of this format without changing its structure."""


def _single_line(value: str) -> str:
    match = _CONTROL.search(value)
    if match:
        what = "a line break" if match.group() in "\r\n" else "a control character"
        raise UnsafeValue(f"a value contains {what}")
    return value


def _oslo(value: str) -> str:
    return _single_line(value).replace("$", "$$")


def _pyini(value: str) -> str:
    return _single_line(value).replace("%", "%%")


def _uwsgi(value: str) -> str:
    bad = sorted(set(_single_line(value)) & set("%$@"))
    if bad:
        raise UnsafeValue(f"a value contains {' '.join(bad)}, which uwsgi would expand")
    return value


_SHELL_WORD = re.compile(r"[\w.:/,=+@\[\]-]*", re.ASCII)


def _shell(value: str) -> str:
    if not _SHELL_WORD.fullmatch(value):
        raise UnsafeValue("a value holds characters a shell would interpret")
    return value


GUARDS: Mapping[str, Callable[[str], str]] = {
    "oslo": _oslo,
    "pyini": _pyini,
    "uwsgi": _uwsgi,
    "shell": _shell,
    "text": lambda value: value,
}


def format_of(path: str) -> Format:
    """The format of a rendered file, from its name; ``ValueError`` when it cannot tell."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith("uwsgi.ini"):
        return "uwsgi"
    if name.endswith("paste.ini") or name == "logging.conf":
        return "pyini"
    if name.endswith((".conf", ".ini")):
        return "oslo"
    if name.endswith(".sh"):
        return "shell"
    raise ValueError(f"no file format known for {path}; pass format= explicitly")


def _finalize(guard: Callable[[str], str]) -> Callable[[object], object]:
    def finalize(value: object) -> object:
        if isinstance(value, str):
            return guard(value)
        if value is None or isinstance(value, bool | int | float):
            # booleans and numbers cannot break a line; None shows a template bug, not data
            return value
        return guard(str(value))

    return finalize


@functools.cache
def environment(charm_templates: pathlib.Path, file_format: Format) -> jinja2.Environment:
    """One jinja2 environment per charm template folder and format (imported only when rendering)."""
    import jinja2

    loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(str(charm_templates)), jinja2.FileSystemLoader(str(LIBRARY_TEMPLATES))]
    )
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_finalize(GUARDS[file_format]),
    )


def render(
    charm_templates: pathlib.Path, name: str, context: Mapping[str, object], *, file_format: Format
) -> str:
    """Render template ``name`` with ``context``; :class:`UnsafeValue` if a value would break the format."""
    return environment(charm_templates, file_format).get_template(name).render(**context)

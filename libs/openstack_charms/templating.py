"""jinja2 rendering with the charm's own templates first and the shared parts after."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

LIBRARY_TEMPLATES = pathlib.Path(__file__).parent / "templates"


@functools.cache
def environment(charm_templates: pathlib.Path) -> jinja2.Environment:
    """One jinja2 environment per charm template folder (imported only when rendering)."""
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
    )


def render(charm_templates: pathlib.Path, name: str, context: Mapping[str, object]) -> str:
    """Render template ``name`` with ``context``."""
    return environment(charm_templates).get_template(name).render(**context)

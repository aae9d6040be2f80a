"""Rendering: every value goes through its file format's guard, and the shared parts render on their own."""

from __future__ import annotations

import configparser
import hashlib
import pathlib
import re

import jinja2
import pytest
from openstack_charms import templating
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.templating import UnsafeValue, format_of

PARTS = sorted((templating.LIBRARY_TEMPLATES / "parts").glob("*.j2"))
INJECTION = "x\n[DEFAULT]\ndebug = true"
STRUCTURED = ("oslo", "pyini", "uwsgi")


def render(tmp_path: pathlib.Path, text: str, file_format: templating.Format, **values: object) -> str:
    # one file per text: the environment (and its template cache) is kept per folder and format
    name = f"t-{hashlib.sha256(text.encode()).hexdigest()[:12]}.j2"
    (tmp_path / name).write_text(text)
    return templating.render(tmp_path, name, values, file_format=file_format)


def oslo_value(raw: str) -> str:
    """A value as oslo.config reads it: ``$$`` is one ``$``; any other ``$`` would interpolate."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        raise AssertionError(f"oslo.config would interpolate ${match.group(1)} in {raw!r}")

    return re.sub(r"\$(\$|\{?\w*\}?)", substitute, raw)


def raw_ini(content: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(content)
    return parser


# -- line breaks ------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", STRUCTURED)
@pytest.mark.parametrize("value", [INJECTION, "x\r[DEFAULT]\rdebug = true", "x\r\ndebug = true"])
def test_a_line_break_is_refused_in_every_structured_format(
    tmp_path: pathlib.Path, file_format: templating.Format, value: str
) -> None:
    with pytest.raises(UnsafeValue, match="line break"):
        render(tmp_path, "[section]\nkey = {{ value }}\n", file_format, value=value)


@pytest.mark.parametrize("file_format", STRUCTURED)
def test_other_control_characters_are_refused(tmp_path: pathlib.Path, file_format: templating.Format) -> None:
    with pytest.raises(UnsafeValue, match="control character"):
        render(tmp_path, "key = {{ value }}\n", file_format, value="a\x00b")


@pytest.mark.parametrize("file_format", STRUCTURED)
def test_values_that_are_not_strings_are_guarded_too(
    tmp_path: pathlib.Path, file_format: templating.Format
) -> None:
    class Sneaky:
        def __str__(self) -> str:
            return INJECTION

    with pytest.raises(UnsafeValue, match="line break"):
        render(tmp_path, "key = {{ value }}\n", file_format, value=Sneaky())
    # numbers and booleans cannot break a line: written as they are
    assert (
        render(tmp_path, "a = {{ n }}\nb = {{ flag }}\n", file_format, n=8, flag=True) == "a = 8\nb = True\n"
    )


def test_text_is_for_whole_file_values_and_takes_them_as_they_are(tmp_path: pathlib.Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB$%@\n-----END CERTIFICATE-----\n"
    assert render(tmp_path, "{{ value }}", "text", value=pem) == pem
    assert render(tmp_path, "{{ value }}", "text", value=INJECTION) == INJECTION


def test_template_text_itself_is_not_guarded(tmp_path: pathlib.Path) -> None:
    """The guard is for values: a template's own ``%(name)s`` or ``$`` stay as written."""
    text = "[formatter_default]\nformat = %(asctime)s $x\n"
    assert render(tmp_path, text, "pyini") == text
    assert render(tmp_path, text, "oslo") == text


# -- interpolation ----------------------------------------------------------------------


def test_oslo_doubles_dollar_and_oslo_reads_the_value_back(tmp_path: pathlib.Path) -> None:
    value = "pa$word$$x${name}$"
    content = render(tmp_path, "[DEFAULT]\npassword = {{ value }}\n", "oslo", value=value)
    assert "password = pa$$word$$$$x$${name}$$\n" in content
    assert oslo_value(raw_ini(content)["DEFAULT"]["password"]) == value
    assert "%" in render(tmp_path, "a = {{ value }}\n", "oslo", value="100%"), "oslo leaves % alone"


def test_pyini_doubles_percent_and_configparser_reads_the_value_back(tmp_path: pathlib.Path) -> None:
    value = "100% of %(here)s and %%"
    content = render(tmp_path, "[app:main]\nbanner = {{ value }}\n", "pyini", value=value)
    assert "banner = 100%% of %%(here)s and %%%%\n" in content
    parser = configparser.ConfigParser()  # the default BasicInterpolation, as paste and logging use
    parser.read_string(content)
    assert parser["app:main"]["banner"] == value
    assert render(tmp_path, "a = {{ value }}\n", "pyini", value="$x") == "a = $x\n", "pyini leaves $ alone"


@pytest.mark.parametrize("char", ["%", "$", "@"])
def test_uwsgi_refuses_what_it_would_expand(tmp_path: pathlib.Path, char: str) -> None:
    with pytest.raises(UnsafeValue, match=re.escape(char)):
        render(tmp_path, "[uwsgi]\nmodule = {{ value }}\n", "uwsgi", value=f"app{char}(x)")


def test_uwsgi_takes_an_ordinary_value(tmp_path: pathlib.Path) -> None:
    content = render(
        tmp_path, "[uwsgi]\nmodule = {{ value }}\n", "uwsgi", value="glance.wsgi.api:application"
    )
    assert content == "[uwsgi]\nmodule = glance.wsgi.api:application\n"


# -- the format of each rendered file ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/glance/glance-api.conf", "oslo"),
        ("/etc/placement/placement.conf", "oslo"),
        ("/etc/keystone/keystone.conf", "oslo"),
        ("/etc/glance/glance-api-paste.ini", "pyini"),
        ("/etc/glance/logging.conf", "pyini"),
        ("/etc/keystone/logging.conf", "pyini"),
        ("/etc/glance/glance-api-uwsgi.ini", "uwsgi"),
        ("/etc/placement/placement-api-uwsgi.ini", "uwsgi"),
        ("/etc/keystone/keystone-api-uwsgi.ini", "uwsgi"),
        ("/etc/demo/other.ini", "oslo"),
    ],
)
def test_format_of_the_files_the_charms_render(path: str, expected: str) -> None:
    assert format_of(path) == expected


@pytest.mark.parametrize(
    "path", ["/etc/keystone/fernet-keys/0", "/etc/demo/ca-bundle.pem", "/etc/demo/x.yaml"]
)
def test_format_of_an_unknown_file_asks_for_it_explicitly(path: str) -> None:
    with pytest.raises(ValueError, match="format"):
        format_of(path)


# -- the shared parts -------------------------------------------------------------------


def bare_context() -> ServiceContext[ServiceConfig]:
    return ServiceContext(config=ServiceConfig(), service_name="demo", app="demo", unit="demo/0", model="m")


def test_every_shared_part_is_covered() -> None:
    assert {p.stem for p in PARTS} >= {
        "database",
        "default",
        "keystone_authtoken",
        "messaging",
        "service_user",
    }


@pytest.mark.parametrize("part", PARTS, ids=[p.stem for p in PARTS])
def test_each_part_renders_with_its_relation_absent(tmp_path: pathlib.Path, part: pathlib.Path) -> None:
    ctx = bare_context()
    assert ctx.database is None and ctx.amqp is None and ctx.identity is None and ctx.ca is None
    try:
        content = render(tmp_path, f'{{% include "parts/{part.name}" %}}', "oslo", **ctx.template_vars())
    except jinja2.UndefinedError as e:  # pragma: no cover (the failure this test is for)
        pytest.fail(f"parts/{part.name} needs a value the bare context lacks: {e}")
    # no credential or URL line is written without its relation
    for key in ("connection", "transport_url", "password", "auth_url", "www_authenticate_uri", "cafile"):
        assert not re.search(rf"^{key} =", content, re.MULTILINE), f"{key} written without its relation"
    raw_ini(content if content.lstrip().startswith("[") else f"[DEFAULT]\n{content}")


def test_default_part_without_amqp_writes_no_transport_url(tmp_path: pathlib.Path) -> None:
    content = render(
        tmp_path, '[DEFAULT]\n{% include "parts/default.j2" %}', "oslo", **bare_context().template_vars()
    )
    assert "debug = false\n" in content
    assert "log_config_append = /etc/demo/logging.conf\n" in content
    assert "transport_url" not in content


def test_library_logging_conf_renders_as_pyini_and_parses(tmp_path: pathlib.Path) -> None:
    ctx = bare_context()
    content = templating.render(tmp_path, "logging.conf.j2", ctx.template_vars(), file_format="pyini")
    parser = configparser.ConfigParser()
    parser.read_string(content)
    assert parser["logger_root"]["level"] == "INFO"
    assert "%(asctime)s" in parser.get("formatter_default", "format", raw=True)

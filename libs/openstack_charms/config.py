"""Typed charm config: frozen dataclasses loaded through ``CharmBase.load_config``.

Validation lives in ``__post_init__`` and raises :class:`InvalidOption`, which the
base charm turns into a Blocked status naming the option and the reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidOption(ValueError):
    """A config option has a value the charm cannot use."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"config option '{option}' {reason}")
        self.option = option
        self.reason = reason


def is_ip_address(value: str | None) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (not a host name, not empty)."""
    import ipaddress

    try:
        ipaddress.ip_address(value or "")
    except ValueError:
        return False
    return True


def shown(value: str, limit: int = 40) -> str:
    """A value as a status may quote it: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…'"


def check_choice(option: str, value: str, choices: Collection[str]) -> None:
    """Raise :class:`InvalidOption` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidOption(option, f"is {shown(value)}, must be one of {', '.join(choices)}")


def check_range(option: str, value: int, low: int, high: int | None = None) -> None:
    """Raise :class:`InvalidOption` unless ``low <= value <= high``."""
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidOption(option, f"is {value}, must be {bound}")


def multiline(default: str = "") -> str:
    """A string option that may hold several lines (a PEM bundle); every other string is one line."""
    return dataclasses.field(default=default, metadata={"multiline": True})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Options every OpenStack service charm has.

    Every string option is a single line without control characters, unless
    declared with :func:`multiline`: a value that reaches a config file can
    then never add a line to it.
    """

    debug: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and not field.metadata.get("multiline") and _CONTROL.search(value):
                raise InvalidOption(
                    field.name.replace("_", "-"), "must be one line without control characters"
                )
        check_choice("log-level", self.log_level.upper(), LOG_LEVELS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class APIConfig(ServiceConfig):
    """Options of every charm that serves an OpenStack API."""

    region: str = "RegionOne"
    workers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.region.strip():
            raise InvalidOption("region", "must not be empty")
        check_range("workers", self.workers, 1, 64)

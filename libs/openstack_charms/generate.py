"""Passwords and keys the charms generate (kept in Juju secrets, never logged)."""

from __future__ import annotations

import base64
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def password(length: int = 32) -> str:
    """Random letters and digits: safe in URLs, ini files and shells without quoting."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def key(nbytes: int = 32) -> str:
    """A random key as URL-safe base64 (the form fernet and cryptography expect)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode()

"""Keystone's typed config: the shared API options plus keystone's own."""

from __future__ import annotations

import dataclasses
import math
import re

from openstack_charms.config import APIConfig, InvalidOption, check_range

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ROTATION_SECONDS = 86400  # the fernet keys secret rotates daily


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeystoneConfig(APIConfig):
    """Options of keystone-k8s."""

    admin_user: str = "admin"
    admin_role: str = "admin"
    token_expiration: int = 3600
    allow_expired_window: int = 169200
    fernet_max_active_keys: int = 4
    catalog_cache_expiration: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for option, value in (("admin-user", self.admin_user), ("admin-role", self.admin_role)):
            if not _NAME.match(value):
                raise InvalidOption(option, "must be 1-64 letters, digits or _.@-")
        check_range("token-expiration", self.token_expiration, 300, 604800)
        check_range("allow-expired-window", self.allow_expired_window, 0, 1209600)
        check_range("fernet-max-active-keys", self.fernet_max_active_keys, 3, 32)
        check_range("catalog-cache-expiration", self.catalog_cache_expiration, 0, 86400)
        # a token must stay verifiable for its lifetime plus the expired window across daily rotations
        needed = math.ceil((self.token_expiration + self.allow_expired_window) / ROTATION_SECONDS) + 2
        if self.fernet_max_active_keys < needed:
            raise InvalidOption(
                "fernet-max-active-keys",
                f"is {self.fernet_max_active_keys}, must be at least {needed} for token-expiration "
                "plus allow-expired-window with daily key rotation",
            )

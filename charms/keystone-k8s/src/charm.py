#!/usr/bin/env python3
"""Keystone, the OpenStack identity service, as a Kubernetes sidecar charm.

The leader creates the fernet and credential keys and the admin password as
Juju secrets (ids in peer app data, so a new leader finds them), syncs the
database, bootstraps keystone once per distinct input, and answers the
identity-service and identity-credentials requests through keystone's API.
Every unit writes the keys it reads from the secrets into its container.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import fernet
import ops
from keystone_config import KeystoneConfig
from openstack_charms import (
    Command,
    Directory,
    File,
    K8sCharm,
    LeaderTask,
    NotReady,
    ServiceContext,
    URLs,
    Workload,
    generate,
)

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

logger = logging.getLogger(__name__)

FERNET_DIR = "/etc/keystone/fernet-keys"
CREDENTIAL_DIR = "/etc/keystone/credential-keys"
#: secret label -> (rotation policy, what the status calls it)
KEY_SECRETS = {
    "fernet-keys": (ops.SecretRotate.DAILY, "the fernet keys"),
    "credential-keys": (ops.SecretRotate.MONTHLY, "the credential keys"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeystoneContext(ServiceContext[KeystoneConfig]):
    """The shared context plus keystone's key repositories and public URL."""

    fernet_dir: str = FERNET_DIR
    credential_dir: str = CREDENTIAL_DIR

    @property
    def public_url(self) -> str:
        """Keystone's public endpoint (what tokens and the version document name)."""
        return self.urls.public if self.urls else ""


class KeystoneCharm(K8sCharm[KeystoneConfig, KeystoneContext]):
    """Keystone API (uwsgi) with its keys, bootstrap and identity providers."""

    config_class = KeystoneConfig
    context_class = KeystoneContext
    service_name = "keystone"
    service_user = "keystone"
    api_port = 5000

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.secret_rotate, self._on_secret_rotate)
        for action in (
            "get-admin-account",
            "get-admin-password",
            "regenerate-password",
            "rotate-fernet-keys",
        ):
            framework.observe(self.on[action].action, self._on_action)

    def _reconcile_events(self) -> Iterator[ops.BoundEvent]:
        # secret-rotate rotates first, then reconciles (see _on_secret_rotate)
        return (e for e in super()._reconcile_events() if e.event_kind != "secret_rotate")

    @property
    def keystone_config(self) -> KeystoneConfig:
        """The validated config."""
        return self.typed_config

    @property
    def endpoints(self) -> URLs:
        """Keystone's public, internal and admin base URLs (it always serves an API)."""
        urls = self.urls
        assert urls is not None
        return urls

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("identity", "OpenStack Identity")]

    # -- secrets ---------------------------------------------------------------

    def key_repository(self, label: str) -> dict[int, str]:
        """Read the keys held in secret ``label`` (the leader creates it on first use)."""
        assert self.peers is not None
        rotate, what = KEY_SECRETS[label]
        content = self.peers.secret(
            label, lambda: fernet.to_content(fernet.setup()), rotate=rotate, what=what
        )
        keys = fernet.from_content(content)
        if 0 not in keys and self.is_leader:
            # a secret emptied by hand: start a new repository rather than serve no tokens
            keys = fernet.setup()
            self.peers.update_secret(label, fernet.to_content(keys))
        return keys

    def keys(self) -> dict[str, dict[int, str]]:
        """Both key repositories (secret reads are cached by the peer store)."""
        return {label: self.key_repository(label) for label in KEY_SECRETS}

    @property
    def admin_password(self) -> str:
        """The admin user's password (a Juju secret the leader creates)."""
        assert self.peers is not None
        content = self.peers.secret(
            "admin-password", lambda: {"password": generate.password(32)}, what="the admin password"
        )
        return content["password"]

    def rotate_keys(self, label: str) -> dict[int, str]:
        """Rotate the keys of secret ``label`` once; leader only."""
        assert self.peers is not None
        max_active = self.keystone_config.fernet_max_active_keys if label == "fernet-keys" else 3
        keys = fernet.rotate(self.key_repository(label), max_active)
        self.peers.update_secret(label, fernet.to_content(keys))
        return keys

    # -- the workload ----------------------------------------------------------

    def workloads(self, ctx: KeystoneContext) -> Sequence[Workload]:
        user = self.service_user
        api = self.uwsgi_api(
            ctx,
            container="keystone",
            name="keystone-api",
            wsgi_app="keystone.wsgi.api:application",
            healthcheck_path="/v3",
            workers=ctx.config.workers,
        )
        keys = self.keys()
        key_files = [
            # keystone reads its key repositories on every use: new keys need no restart
            File(f"{directory}/{index}", key, user, user, 0o600, restarts=())
            for label, directory in (("fernet-keys", FERNET_DIR), ("credential-keys", CREDENTIAL_DIR))
            for index, key in sorted(keys[label].items())
        ]
        own = Workload(
            "keystone",
            files=[
                self.render("keystone.conf.j2", "/etc/keystone/keystone.conf", ctx),
                self.logging_config(ctx),
                *key_files,
            ],
            # key repositories keystone accepts: its own, not readable by others
            directories=[
                Directory("/etc/keystone", user, user, 0o755),
                Directory(FERNET_DIR, user, user, 0o700),
                Directory(CREDENTIAL_DIR, user, user, 0o700),
            ],
        )
        return [api + own]

    def leader_work(self, ctx: KeystoneContext) -> Sequence[LeaderTask]:
        """Sync the database, bootstrap keystone, migrate credentials: each once per input."""
        config, password, user = ctx.config, self.admin_password, self.service_user
        urls = self.endpoints
        environment = {
            "OS_BOOTSTRAP_USERNAME": config.admin_user,
            "OS_BOOTSTRAP_PASSWORD": password,
            "OS_BOOTSTRAP_PROJECT_NAME": "admin",
            "OS_BOOTSTRAP_ROLE_NAME": config.admin_role,
            "OS_BOOTSTRAP_SERVICE_NAME": self.service_name,
            "OS_BOOTSTRAP_REGION_ID": config.region,
            "OS_BOOTSTRAP_ADMIN_URL": f"{urls.admin}/v3",
            "OS_BOOTSTRAP_INTERNAL_URL": f"{urls.internal}/v3",
            "OS_BOOTSTRAP_PUBLIC_URL": f"{urls.public}/v3",
        }
        credential_keys = self.keys()["credential-keys"]
        return [
            self.db_sync(ctx, "keystone", "keystone-manage", "db_sync"),
            # the password goes through the environment, never argv; the marker holds only a digest
            LeaderTask(
                "bootstrap",
                "keystone",
                Command(("keystone-manage", "bootstrap"), user=user, environment=environment),
                inputs="\n".join(f"{k}={v}" for k, v in sorted(environment.items())),
            ),
            # re-encrypt stored credentials with the primary key after every credential key change
            LeaderTask(
                "credential-migrate",
                "keystone",
                Command(("keystone-manage", "credential_migrate"), user=user),
                inputs=hashlib.sha256(repr(sorted(credential_keys.items())).encode()).hexdigest(),
            ),
        ]

    def after_start(self, ctx: KeystoneContext) -> None:
        """Leader: answer identity requests through the API."""
        if self.is_leader:
            from identity_provider import Provider

            Provider.for_charm(self).serve()

    def active_message(self, ctx: KeystoneContext) -> str:
        """The public identity URL."""
        return f"{ctx.public_url}/v3"

    # -- rotation and actions --------------------------------------------------

    def _on_secret_rotate(self, event: ops.SecretRotateEvent) -> None:
        label = event.secret.label or ""
        if self.is_leader:
            try:
                if label in KEY_SECRETS:
                    self.rotate_keys(label)
                elif label.startswith("credentials_svc_"):
                    from identity_provider import Provider

                    Provider.for_charm(self).new_password(label)
            except NotReady as e:
                logger.warning("secret %s not rotated now: %s", label, e.message)
        self._on_event(event)

    def _on_action(self, event: ops.ActionEvent) -> None:
        from actions import run_action

        run_action(self, event)


if __name__ == "__main__":  # pragma: nocover
    ops.main(KeystoneCharm)

#!/usr/bin/env python3
"""Keystone, the OpenStack identity service, as a Kubernetes sidecar charm.

The leader creates the fernet and credential keys and the admin password as
Juju secrets (ids in peer app data, so a new leader finds them), syncs the
database, bootstraps keystone once per distinct input, and answers the
identity-service and identity-credentials requests through keystone's API.
Every unit writes the keys it reads from the secrets into its container.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import fernet
import ops
from keystone_config import KeystoneConfig
from openstack_charms.k8s import APICharm, ConfigFile
from openstack_charms.status import NotReady
from openstack_charms.workload import Command, Directory, File, PebbleApplier

logger = logging.getLogger(__name__)

FERNET_DIR = "/etc/keystone/fernet-keys"
CREDENTIAL_DIR = "/etc/keystone/credential-keys"
#: secret label -> (rotation policy, what the status calls it)
KEY_SECRETS = {
    "fernet-keys": (ops.SecretRotate.DAILY, "the fernet keys"),
    "credential-keys": (ops.SecretRotate.MONTHLY, "the credential keys"),
}


class KeystoneCharm(APICharm):
    """Keystone API (uwsgi) with its keys, bootstrap and identity providers."""

    service_name = "keystone"
    service_user = "keystone"
    api_port = 5000
    service_type = "identity"
    service_description = "OpenStack Identity"
    wsgi_app = "keystone.wsgi.api:application"
    healthcheck_path = "/v3"
    config_class = KeystoneConfig
    config_files = (ConfigFile("keystone.conf.j2", "/etc/keystone/keystone.conf"),)
    db_sync = ("keystone-manage", "db_sync")

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
        """The validated config, typed as keystone's."""
        config = self.typed_config
        assert isinstance(config, KeystoneConfig)
        return config

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

    @functools.cached_property
    def keys(self) -> dict[str, dict[int, str]]:
        """Both key repositories, read once per hook."""
        return {label: self.key_repository(label) for label in KEY_SECRETS}

    @property
    def admin_password(self) -> str:
        """The admin user's password (a Juju secret the leader creates)."""
        from openstack_charms import generate

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
        self.__dict__.pop("keys", None)
        return keys

    # -- the workload ----------------------------------------------------------

    def template_context(self) -> dict[str, Any]:
        """Add keystone's public URL and key directories to the shared context."""
        context = super().template_context()
        context.update(public_url=self.public_url, fernet_dir=FERNET_DIR, credential_dir=CREDENTIAL_DIR)
        return context

    def directories(self) -> list[Directory]:
        """Key repositories keystone accepts: its own, not readable by others."""
        user = self.service_user
        return [
            Directory("/etc/keystone", user, user, 0o755),
            Directory(FERNET_DIR, user, user, 0o700),
            Directory(CREDENTIAL_DIR, user, user, 0o700),
        ]

    def extra_files(self, context: Mapping[str, Any]) -> list[File]:
        """Add the fernet and credential key files to the shared ones."""
        files = super().extra_files(context)
        for label, directory in (("fernet-keys", FERNET_DIR), ("credential-keys", CREDENTIAL_DIR)):
            # keystone reads its key repositories on every use: new keys need no restart
            files += [
                File(f"{directory}/{index}", key, self.service_user, self.service_user, 0o600, restarts=())
                for index, key in sorted(self.keys[label].items())
            ]
        return files

    def bootstrap(self, applier: PebbleApplier) -> None:
        """Sync the database, bootstrap keystone, migrate credentials: leader tasks, once per input."""
        super().bootstrap(applier)
        config, password = self.keystone_config, self.admin_password
        environment = {
            "OS_BOOTSTRAP_USERNAME": config.admin_user,
            "OS_BOOTSTRAP_PASSWORD": password,
            "OS_BOOTSTRAP_PROJECT_NAME": "admin",
            "OS_BOOTSTRAP_ROLE_NAME": config.admin_role,
            "OS_BOOTSTRAP_SERVICE_NAME": self.service_name,
            "OS_BOOTSTRAP_REGION_ID": config.region,
            "OS_BOOTSTRAP_ADMIN_URL": f"{self.admin_url}/v3",
            "OS_BOOTSTRAP_INTERNAL_URL": f"{self.internal_url}/v3",
            "OS_BOOTSTRAP_PUBLIC_URL": f"{self.public_url}/v3",
        }
        # the password goes through the environment, never argv; the marker holds only a digest
        inputs = "\n".join(f"{k}={v}" for k, v in sorted(environment.items()))
        command = Command(("keystone-manage", "bootstrap"), user=self.service_user, environment=environment)
        self.leader_task(
            "bootstrap", inputs, lambda: self._run(applier, command), what="keystone-manage bootstrap"
        )
        # re-encrypt stored credentials with the primary key after every credential key change
        digest = hashlib.sha256(repr(sorted(self.keys["credential-keys"].items())).encode()).hexdigest()
        migrate = Command(("keystone-manage", "credential_migrate"), user=self.service_user)
        self.leader_task(
            "credential-migrate", digest, lambda: self._run(applier, migrate), what="credential_migrate"
        )

    @staticmethod
    def _run(applier: PebbleApplier, command: Command) -> None:
        applier.run(command)

    def configure(self) -> None:
        """Apply the workload; the active status shows the public identity URL."""
        super().configure()
        self.ready_message = f"{self.public_url}/v3"

    def after_start(self) -> None:
        """Leader: answer identity requests through the API."""
        if self.is_leader:
            from identity_provider import Provider

            Provider.for_charm(self).serve()

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

"""keystone-k8s actions: admin credentials, password regeneration, key rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ops
from openstack_charms.status import NotReady

if TYPE_CHECKING:
    from charm import KeystoneCharm


def run_action(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    """Run the action ``event`` names; a condition that stops it fails the action with its reason."""
    handlers = {
        "get-admin-password": get_admin_password,
        "get-admin-account": get_admin_account,
        "regenerate-password": regenerate_password,
        "rotate-fernet-keys": rotate_fernet_keys,
    }
    try:
        handlers[event.handle.kind.removesuffix("_action").replace("_", "-")](charm, event)
    except NotReady as e:
        event.fail(e.message)


def _leader(charm: KeystoneCharm, event: ops.ActionEvent) -> bool:
    if not charm.is_leader:
        event.fail("run this action on the leader unit")
        return False
    return True


def get_admin_password(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    """Return the admin user's password."""
    event.set_results({"password": charm.admin_password})


def get_admin_account(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    """Return everything needed to use the cloud as admin: values, an openrc and a clouds.yaml."""
    config = charm.keystone_config
    password = charm.admin_password
    auth_url = f"{charm.endpoints.public}/v3"
    openrc = "\n".join(
        [
            "# openrc for the OpenStack admin",
            f"export OS_AUTH_URL={auth_url}",
            f"export OS_USERNAME={config.admin_user}",
            f"export OS_PASSWORD={password}",
            "export OS_USER_DOMAIN_NAME=Default",
            "export OS_PROJECT_NAME=admin",
            "export OS_PROJECT_DOMAIN_NAME=Default",
            f"export OS_REGION_NAME={config.region}",
            "export OS_IDENTITY_API_VERSION=3",
            "export OS_AUTH_VERSION=3",
            "",
        ]
    )
    clouds = "\n".join(
        [
            "clouds:",
            "  openstack:",
            "    auth:",
            f"      auth_url: {auth_url}",
            f"      username: {config.admin_user}",
            f"      password: {password}",
            "      user_domain_name: Default",
            "      project_name: admin",
            "      project_domain_name: Default",
            f"    region_name: {config.region}",
            "    interface: public",
            "    identity_api_version: 3",
            "",
        ]
    )
    event.set_results(
        {
            "username": config.admin_user,
            "password": password,
            "user-domain-name": "Default",
            "project-name": "admin",
            "project-domain-name": "Default",
            "region": config.region,
            "internal-endpoint": f"{charm.endpoints.internal}/v3",
            "public-endpoint": auth_url,
            "api-version": "3",
            "openrc": openrc,
            "clouds-yaml": clouds,
        }
    )


def regenerate_password(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    """Give the admin user, or a service user, a new password."""
    if not _leader(charm, event):
        return
    import identity_provider
    from charms.keystone_k8s.v0 import identity_service as ids
    from openstack_charms import generate

    assert charm.peers is not None
    username = str(event.params.get("username") or charm.keystone_config.admin_user)
    if username == charm.keystone_config.admin_user:
        password = generate.password(32)
        charm.admin_password  # noqa: B018 (the secret must exist before it is replaced)
        charm.peers.update_secret("admin-password", {"password": password})
        event.set_results({"username": username, "password": password})
        _apply_now(charm, event)
        return
    for relation in charm.model.relations["identity-service"]:
        if relation.app is None:
            continue
        label = ids.credentials_label(relation.app.name)
        secret_id = charm.peers.get(f"{label}-secret-id")
        if (
            secret_id
            and charm.model.get_secret(id=secret_id).get_content(refresh=True)["username"] == username
        ):
            password = identity_provider.Provider.for_charm(charm).new_password(label)
            event.set_results({"username": username, "password": password})
            return
    event.fail(f"no user {username!r} managed by this application")


def rotate_fernet_keys(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    """Rotate the fernet token keys now and write them on this unit (others follow the secret)."""
    if not _leader(charm, event):
        return
    keys = charm.rotate_keys("fernet-keys")
    event.set_results({"primary-key": str(max(keys)), "keys": str(len(keys))})
    _apply_now(charm, event)


def _apply_now(charm: KeystoneCharm, event: ops.ActionEvent) -> None:
    # bootstrap / the key files follow the secret: apply now, or at the next hook if not ready
    try:
        charm.reconcile()
    except NotReady as e:
        event.set_results({"applied": f"at the next hook ({e.message})"})
    else:
        event.set_results({"applied": "now"})

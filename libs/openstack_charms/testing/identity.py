"""Complete identity-service and identity-credentials relations, as our keystone leaves them.

The remote data is produced by the interface library's provider-side builder,
the same code keystone-k8s runs, so a requirer tested against these fixtures is
tested against what keystone really publishes.
"""

from __future__ import annotations

import dataclasses

from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids
from ops import testing

from . import RelationFixture

KEYSTONE_INTERNAL_URL = "http://keystone.openstack.svc:5000"
KEYSTONE_PUBLIC_URL = "https://keystone.example.com"


def identity_service_fixture(
    endpoint: str = "identity-service",
    *,
    requirer_app: str = "glance",
    remote_app: str = "keystone",
    password: str = "svc-password",
    region: str = "RegionOne",
    internal_url: str = KEYSTONE_INTERNAL_URL,
    public_url: str = KEYSTONE_PUBLIC_URL,
    relation_id: int | None = None,
) -> RelationFixture:
    """identity-service after keystone processed the request of ``requirer_app``."""
    secret = testing.Secret(
        {"username": f"{ids.service_username_prefix(requirer_app)}-abc123", "password": password},
        owner=None,
    )
    data = ids.build_provider_data(
        internal_url=internal_url,
        public_url=public_url,
        region=region,
        bind_host="10.1.0.10",
        port=5000,
        admin_domain=ids.Resource("admin_domain", "adomain-id"),
        admin_project=ids.Resource("admin", "aproject-id"),
        admin_user=ids.Resource("admin", "auser-id"),
        admin_role="admin",
        service_domain=ids.Resource("service_domain", "sdomain-id"),
        service_project=ids.Resource("services", "sproject-id"),
        service_user_id="svcuser-id",
        credentials_secret_id=secret.id,
    )
    relation = testing.Relation(
        endpoint,
        interface="keystone",
        remote_app_name=remote_app,
        remote_app_data=data.to_databag(),
    )
    if relation_id is not None:
        relation = dataclasses.replace(relation, id=relation_id)
    return RelationFixture(relation, (secret,))


def identity_credentials_fixture(
    endpoint: str = "identity-credentials",
    *,
    username: str = "exporter",
    remote_app: str = "keystone",
    password: str = "account-password",
    region: str = "RegionOne",
    internal_url: str = KEYSTONE_INTERNAL_URL,
    public_url: str = KEYSTONE_PUBLIC_URL,
) -> RelationFixture:
    """identity-credentials after keystone created the account ``username``."""
    secret = testing.Secret({"username": username, "password": password}, owner=None)
    data = idc.build_provider_data(
        internal_url=internal_url,
        public_url=public_url,
        region=region,
        bind_host="10.1.0.10",
        port=5000,
        project=idc.Resource("services", "sproject-id"),
        domain=idc.Resource("service_domain", "sdomain-id"),
        admin_role="admin",
        credentials_secret_id=secret.id,
    )
    relation = testing.Relation(
        endpoint,
        interface="keystone-credentials",
        remote_app_name=remote_app,
        remote_app_data=data.to_databag(),
    )
    return RelationFixture(relation, (secret,))

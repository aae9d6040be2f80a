#!/usr/bin/env python3
"""Glance: the OpenStack Image service, on Kubernetes, with images on a Juju storage volume.

Database, keystone registration, ingress and TLS come from the endpoints the
charm declares; the charm declares Glance's own parts: one uwsgi API in one
container, its file store on ``local-repository``, upload limits, the
metadata definitions loaded by the leader, and the URL it publishes on
``image-service``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ops
from openstack_charms import (
    APIConfig,
    Command,
    Directory,
    HandlerHost,
    InvalidOption,
    K8sCharm,
    LeaderTask,
    OpenStackCharm,
    RelationHandler,
    ServiceContext,
    Wire,
    Workload,
)
from openstack_charms.relations.base import update_databag
from openstack_charms.relations.ingress import unit_host

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

STORAGE = "local-repository"
STORAGE_MOUNT = "/var/lib/glance/images"
#: the file store's data directory, on the volume
STORE_DIR = f"{STORAGE_MOUNT}/store"
PASTE_INI = "/etc/glance/glance-api-paste.ini"
STAGING_DIR = "/var/lib/glance/staging"
TASKS_DIR = "/var/lib/glance/tasks_work_dir"
IMPORT_METHODS = ("glance-direct", "web-download", "copy-image")
#: the metadata definitions the image ships (kolla copies glance's etc/ into /etc/glance)
METADEFS_DIR = "/etc/glance/metadefs"
#: the stores this charm configures: copy-image copies between stores, so needs two
STORES = ("filestore",)
#: glance refuses caps at or above 8 EiB
MAX_IMAGE_SIZE = 2**63
_SIZE = re.compile(r"(\d+)\s*(?:([KMGTP])(?:i?B)?|B)?", re.IGNORECASE)
_FORMAT = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _size_in_bytes(option: str, value: str) -> int:
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise InvalidOption(option, f"is {value!r}, must be a size such as 500M, 20G or 1T")
    unit = (match.group(2) or "").upper()
    size = int(match.group(1)) * 1024 ** (" KMGTP".index(unit) if unit else 0)
    if not 0 < size < MAX_IMAGE_SIZE:
        raise InvalidOption(option, f"is {value!r}, must be more than 0 and less than 8 EiB")
    return size


def _word_list(option: str, value: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise InvalidOption(option, "must name at least one value")
    if len(set(items)) != len(items):
        raise InvalidOption(option, f"is {value!r}, has duplicates")
    return items


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlanceConfig(APIConfig):
    """Glance's options on top of every API charm's."""

    image_size_cap: str = ""
    disk_formats: str = "ami,ari,aki,vhd,vhdx,vmdk,raw,qcow2,vdi,iso,ploop"
    import_methods: str = "glance-direct,web-download"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_size_cap_bytes  # noqa: B018 (validates)
        bad = [f for f in self.disk_format_list if not _FORMAT.fullmatch(f)]
        if bad:
            raise InvalidOption("disk-formats", f"has invalid format names: {', '.join(bad)}")
        unknown = [m for m in self.import_method_list if m not in IMPORT_METHODS]
        if unknown:
            raise InvalidOption(
                "import-methods", f"has {', '.join(unknown)}; choose among {', '.join(IMPORT_METHODS)}"
            )
        if "copy-image" in self.import_method_list and len(STORES) < 2:
            # with one store a copy never finishes and the client times out
            raise InvalidOption(
                "import-methods", "has copy-image, which needs a second store; this charm has one"
            )

    @property
    def image_size_cap_bytes(self) -> int | None:
        """The upload limit in bytes; ``None`` keeps glance's default."""
        if not self.image_size_cap.strip():
            return None
        return _size_in_bytes("image-size-cap", self.image_size_cap)

    @property
    def disk_format_list(self) -> tuple[str, ...]:
        """The accepted disk formats."""
        return _word_list("disk-formats", self.disk_formats)

    @property
    def import_method_list(self) -> tuple[str, ...]:
        """The enabled interoperable import methods."""
        return _word_list("import-methods", self.import_methods)


class ImageServiceProvider(RelationHandler[None]):
    """``image-service`` (interface ``glance``): the API URL as ``glance-api-server``.

    The leader writes it in the application databag; every unit also writes it
    in its own unit databag, where the machine charms of this interface
    (nova-cloud-controller, cinder) read it.
    """

    reads_remote = False

    def __init__(self, host: HandlerHost, endpoint: str, *, url: Callable[[], str]) -> None:
        super().__init__(host, endpoint)
        self.url = url

    def publish(self) -> None:
        """Write the internal API URL (unchanged values are not rewritten)."""
        relations = self.relations
        if not relations:
            return
        data: dict[str, str | None] = {"glance-api-server": self.url()}
        for relation in relations:
            if self.host.is_leader:
                update_databag(relation.data[self.host.app], data)
            update_databag(relation.data[self.host.unit], data)


def _image_service(charm: OpenStackCharm[Any, Any], endpoint: str) -> ImageServiceProvider:
    return ImageServiceProvider(charm, endpoint, url=lambda: charm.urls.internal if charm.urls else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlanceContext(ServiceContext[GlanceConfig]):
    """The shared context plus glance's store and this unit's own URL."""

    store_dir: str = STORE_DIR
    staging_dir: str = STAGING_DIR
    tasks_dir: str = TASKS_DIR
    paste_ini: str = PASTE_INI

    @property
    def worker_self_reference_url(self) -> str:
        """Where other units reach this one (a stage and its import may land on different units)."""
        return f"{self.scheme}://{unit_host(self.unit, self.app, self.model)}:{GlanceCharm.api_port}"


class GlanceCharm(K8sCharm[GlanceConfig, GlanceContext]):
    """OpenStack Image service API."""

    config_class = GlanceConfig
    context_class = GlanceContext
    service_name = "glance"
    service_user = "glance"
    api_port = 9292
    own_wiring = {"image-service": Wire(_image_service, ("charm",))}

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("image", "OpenStack Image")]

    def workloads(self, ctx: GlanceContext) -> Sequence[Workload]:
        user = self.service_user
        api = self.uwsgi_api(
            ctx,
            container="glance",
            name="glance-api",
            wsgi_app="glance.wsgi.api:application",
            # "/" answers 300 Multiple Choices; the version list answers 200
            healthcheck_path="/versions",
            workers=ctx.config.workers,
            # image uploads arrive with chunked transfer encoding
            options={
                "http-auto-chunked": "true",
                "http-chunked-input": "true",
                "http-raw-body": "true",
                "socket-timeout": "10",
            },
        )
        own = Workload(
            "glance",
            files=[
                self.render("glance-api.conf.j2", "/etc/glance/glance-api.conf", ctx),
                self.render("glance-api-paste.ini.j2", PASTE_INI, ctx, permissions=0o644),
                self.logging_config(ctx),
            ],
            directories=[
                # where glance stages uploads and works on import tasks
                Directory(STAGING_DIR, user, user, 0o750),
                Directory(TASKS_DIR, user, user, 0o750),
                # glance's own directory on the volume, whose root a new volume gives to root; without
                # parents, a volume that is not mounted is waited for rather than replaced by a
                # directory that dies with the pod
                Directory(STORE_DIR, user, user, 0o750, make_parents=False),
            ],
        )
        return [api + own]

    def leader_work(self, ctx: GlanceContext) -> Sequence[LeaderTask]:
        sync = self.db_sync(ctx, "glance", "glance-manage", "db_sync")
        return [
            sync,
            # the dashboard's image property editor and tempest's metadefs tests need the definitions
            LeaderTask(
                "load-metadefs",
                "glance",
                Command(("glance-manage", "db_load_metadefs", METADEFS_DIR), user=self.service_user),
                inputs=sync.inputs,
            ),
        ]


if __name__ == "__main__":  # pragma: nocover
    ops.main(GlanceCharm)

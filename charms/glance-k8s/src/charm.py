#!/usr/bin/env python3
"""Glance: the OpenStack Image service, on Kubernetes, with images on a Juju storage volume.

Everything an API charm does (database, keystone registration, ingress, TLS,
uwsgi under Pebble, db sync on the leader) comes from
:class:`openstack_charms.k8s.APICharm`; this charm declares Glance's
specifics: its file store on ``local-repository``, upload limits, and the
URL it publishes on ``image-service``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import ops
from openstack_charms.config import APIConfig, InvalidOption
from openstack_charms.k8s import APICharm, ConfigFile
from openstack_charms.relations.base import RelationHandler, update_databag
from openstack_charms.relations.ingress import unit_host
from openstack_charms.status import Waiting
from openstack_charms.workload import Directory, PebbleApplier
from ops import pebble

STORAGE = "local-repository"
STORAGE_MOUNT = "/var/lib/glance/images"
#: the file store's data directory, on the volume
STORE_DIR = f"{STORAGE_MOUNT}/store"
PASTE_INI = "/etc/glance/glance-api-paste.ini"
STAGING_DIR = "/var/lib/glance/staging"
TASKS_DIR = "/var/lib/glance/tasks_work_dir"
IMPORT_METHODS = ("glance-direct", "web-download", "copy-image")
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
    import_methods: str = ",".join(IMPORT_METHODS)

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

    holds_back_when_incomplete = False

    def __init__(self, charm: APICharm, endpoint: str) -> None:
        super().__init__(charm, endpoint)
        self.api = charm

    def get_context(self) -> None:
        """Nothing to read from the consumers."""
        return None

    def publish(self) -> None:
        """Write the internal API URL (unchanged values are not rewritten)."""
        data = {"glance-api-server": self.api.internal_url}
        for relation in self.relations:
            if self.api.is_leader:
                update_databag(relation.data[self.api.app], dict(data))
            update_databag(relation.data[self.api.unit], dict(data))


class GlanceCharm(APICharm):
    """OpenStack Image service API."""

    config_class = GlanceConfig
    service_name = "glance"
    service_user = "glance"
    api_port = 9292
    service_type = "image"
    service_description = "OpenStack Image"
    wsgi_app = "glance.wsgi.api:application"
    # "/" answers 300 Multiple Choices; the version list answers 200
    healthcheck_path = "/versions"
    config_files = (
        ConfigFile("glance-api.conf.j2", "/etc/glance/glance-api.conf"),
        ConfigFile("glance-api-paste.ini.j2", PASTE_INI, permissions=0o644),
    )
    db_sync = ("glance-manage", "db_sync")
    # image uploads arrive with chunked transfer encoding
    uwsgi_options: ClassVar[Mapping[str, str]] = {
        "http-auto-chunked": "true",
        "http-chunked-input": "true",
        "http-raw-body": "true",
        "socket-timeout": "10",
    }

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.image_service = ImageServiceProvider(self, "image-service")

    def template_context(self) -> dict[str, Any]:
        """Return the shared context plus the image store and this unit's own URL."""
        context = super().template_context()
        scheme = "https" if context.get("tls") else "http"
        pod = unit_host(self.unit.name, self.app.name, self.model.name)
        context.update(
            store_dir=STORE_DIR,
            staging_dir=STAGING_DIR,
            tasks_dir=TASKS_DIR,
            paste_ini=PASTE_INI,
            worker_self_reference_url=f"{scheme}://{pod}:{self.api_port}",
        )
        return context

    def directories(self) -> list[Directory]:
        """Where glance stages uploads and works on import tasks (the image store is on the volume)."""
        user = self.service_user
        return [Directory(path, user, user, 0o750) for path in (STAGING_DIR, TASKS_DIR)]

    def bootstrap(self, applier: PebbleApplier) -> None:
        """Prepare the image store, then sync the database (leader)."""
        self._prepare_image_store(applier.container)
        super().bootstrap(applier)

    def _prepare_image_store(self, container: ops.Container) -> None:
        """Create glance's own directory on the volume, whose root a new volume gives to root.

        Creating it through Pebble sets its owner without running a command as
        root; without ``make_parents`` a volume that is not mounted is noticed
        rather than replaced by a directory that dies with the pod.
        """
        try:
            container.make_dir(STORE_DIR, permissions=0o750, user=self.service_user, group=self.service_user)
        except pebble.PathError as e:
            if e.kind == "not-found":
                raise Waiting(f"waiting for storage {STORAGE} at {STORAGE_MOUNT}") from e
            # already there: the steady state
        except pebble.ConnectionError as e:
            raise Waiting(f"waiting for container {self.container} (Pebble)") from e


if __name__ == "__main__":  # pragma: nocover
    ops.main(GlanceCharm)

"""Shared library of the OpenStack charm collection.

A charm is a declaration over this package (see :mod:`.charm` for the
reconcile pipeline)::

    from openstack_charms import K8sCharm, ServiceContext, Workload, LeaderTask, Command

The names below are imported on first use (PEP 562), so a hook pays only for
the modules it touches: ``import openstack_charms`` alone imports nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_WHERE = {
    "OpenStackCharm": "charm",
    "K8sCharm": "k8s",
    "MachineCharm": "machine",
    "ServiceContext": "context",
    "URLs": "context",
    "ServiceConfig": "config",
    "APIConfig": "config",
    "InvalidOption": "config",
    "check_choice": "config",
    "check_range": "config",
    "multiline": "config",
    "Blocked": "status",
    "Waiting": "status",
    "NotReady": "status",
    "HOST": "plan",
    "Workload": "plan",
    "File": "plan",
    "Directory": "plan",
    "Service": "plan",
    "Check": "plan",
    "Command": "plan",
    "LeaderTask": "plan",
    "Apt": "plan",
    "Snap": "plan",
    "RelationHandler": "relations.base",
    "Incomplete": "relations.base",
    "RelationDataError": "relations.base",
    "HandlerHost": "relations.base",
    "Wire": "relations.wiring",
    "generate": "",
}

__all__ = [
    "HOST",
    "APIConfig",
    "Apt",
    "Blocked",
    "Check",
    "Command",
    "Directory",
    "File",
    "HandlerHost",
    "Incomplete",
    "InvalidOption",
    "K8sCharm",
    "LeaderTask",
    "MachineCharm",
    "NotReady",
    "OpenStackCharm",
    "RelationDataError",
    "RelationHandler",
    "Service",
    "ServiceConfig",
    "ServiceContext",
    "Snap",
    "URLs",
    "Waiting",
    "Wire",
    "Workload",
    "check_choice",
    "check_range",
    "generate",
    "multiline",
]

if TYPE_CHECKING:
    from . import generate
    from .charm import OpenStackCharm
    from .config import APIConfig, InvalidOption, ServiceConfig, check_choice, check_range, multiline
    from .context import ServiceContext, URLs
    from .k8s import K8sCharm
    from .machine import MachineCharm
    from .plan import HOST, Apt, Check, Command, Directory, File, LeaderTask, Service, Snap, Workload
    from .relations.base import HandlerHost, Incomplete, RelationDataError, RelationHandler
    from .relations.wiring import Wire
    from .status import Blocked, NotReady, Waiting


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not module:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)

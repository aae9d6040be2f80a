"""ops.testing's Pebble, made real: what a charm asks of a container is also done on the machine."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

from scenario import mocking

from .containers import ContainerKey, Machine


@contextlib.contextmanager
def real_pebble(machine: Machine) -> Iterator[None]:
    """Make ops.testing's Pebble also do, on ``machine``, what the charm asked of it."""
    client = mocking._MockPebbleClient

    def key(self: Any) -> ContainerKey:
        context = self._context
        return f"{context.app_name}/{context.unit_id}", self._container_name

    saved = {
        name: getattr(client, name)
        for name in (
            "push",
            "make_dir",
            "remove_path",
            "exec",
            "replan_services",
            "restart_services",
            "start_services",
            "stop_services",
        )
    }

    def push(self: Any, path: Any, source: Any, **kwargs: Any) -> None:
        saved["push"](self, path, source, **kwargs)
        data = source.read() if hasattr(source, "read") else source
        data = data.encode(kwargs.get("encoding") or "utf-8") if isinstance(data, str) else bytes(data)
        machine.write(
            key(self),
            str(path),
            data,
            make_dirs=kwargs.get("make_dirs", False),
            permissions=kwargs.get("permissions"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
        )

    def make_dir(self: Any, path: Any, **kwargs: Any) -> None:
        saved["make_dir"](self, path, **kwargs)
        machine.make_dir(
            key(self),
            str(path),
            make_parents=kwargs.get("make_parents", False),
            permissions=kwargs.get("permissions"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
        )

    def remove_path(self: Any, path: Any, *, recursive: bool = False) -> None:
        saved["remove_path"](self, path, recursive=recursive)
        machine.remove(key(self), str(path), recursive=recursive)

    def exec_(self: Any, command: list[str], **kwargs: Any) -> Any:
        mock = saved["exec"](self, command, **kwargs)
        code, out, err = machine.run(
            key(self),
            list(command),
            environment=kwargs.get("environment"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
            timeout=kwargs.get("timeout"),
            working_dir=kwargs.get("working_dir"),
        )
        return mocking._MockExecProcess(
            change_id=mock._change_id,
            args=mock._args,
            return_code=code,
            stdin=mock.stdin,
            stdout=io.StringIO(out),
            stderr=io.StringIO(err),
        )

    def replan_services(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = saved["replan_services"](self, *args, **kwargs)
        machine.replan(key(self), self.get_plan())
        return result

    def restart_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["restart_services"](self, services, *args, **kwargs)
        machine.restart(key(self), self.get_plan(), list(services))
        return result

    def start_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["start_services"](self, services, *args, **kwargs)
        plan = self.get_plan()
        for name in services:
            if (key(self), name) not in machine.processes:
                machine.start(key(self), name, plan.services[name].to_dict())
        return result

    def stop_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["stop_services"](self, services, *args, **kwargs)
        for name in services:
            machine.stop(key(self), name)
        return result

    replacements = {
        "push": push,
        "make_dir": make_dir,
        "remove_path": remove_path,
        "exec": exec_,
        "replan_services": replan_services,
        "restart_services": restart_services,
        "start_services": start_services,
        "stop_services": stop_services,
    }
    for name, fn in replacements.items():
        setattr(client, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(client, name, fn)

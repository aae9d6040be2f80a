"""An in-memory Keystone standing in for the charm's REST client in unit tests."""

from __future__ import annotations

import dataclasses
import itertools

import keystone_api


@dataclasses.dataclass
class User:
    name: str
    id: str
    password: str
    domain_id: str


class FakeKeystone:
    """An in-memory Keystone with the methods of ``keystone_api.KeystoneAPI``.

    State survives between charm runs (it is keystone's database); ``up`` says
    whether the API answers; ``calls`` records every method called.
    """

    def __init__(self) -> None:
        self.up = True
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self.domains: dict[str, str] = {"Default": "default"}
        self.projects: dict[tuple[str, str], str] = {("admin", "default"): "admin-project-id"}
        self.roles: dict[str, str] = {"admin": "admin-role-id", "member": "member-role-id"}
        self.users: dict[tuple[str, str], User] = {}
        self.grants: set[tuple[str, str, str]] = set()
        self.regions: set[str] = {"RegionOne"}
        self.services: dict[tuple[str, str], str] = {}
        self.endpoints: dict[tuple[str, str, str], str] = {}
        self.admin_password: str | None = None

    def __call__(self, *args: object, **kwargs: object) -> FakeKeystone:
        return self

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if not self.up:
            raise keystone_api.UnavailableError("connection refused")

    def answering(self) -> bool:
        return self.up

    def authenticate(
        self, username: str, password: str, *, project: str = "admin", domain: str = "default"
    ) -> None:
        self._check("authenticate")
        self.admin_password = password
        self.users.setdefault(("admin", "default"), User("admin", "admin-user-id", password, "default"))

    def find_domain(self, name: str) -> keystone_api.Resource | None:
        self._check("find_domain")
        return keystone_api.Resource(name, self.domains[name]) if name in self.domains else None

    def find_user(self, name: str, domain_id: str) -> keystone_api.Resource | None:
        self._check("find_user")
        user = self.users.get((name, domain_id))
        return keystone_api.Resource(name, user.id) if user else None

    def find_project(self, name: str, domain_id: str) -> keystone_api.Resource | None:
        self._check("find_project")
        project_id = self.projects.get((name, domain_id))
        return keystone_api.Resource(name, project_id) if project_id else None

    def ensure_domain(self, name: str, description: str = "") -> keystone_api.Resource:
        self._check("ensure_domain")
        return keystone_api.Resource(name, self.domains.setdefault(name, self._new_id("domain")))

    def ensure_project(self, name: str, domain_id: str, description: str = "") -> keystone_api.Resource:
        self._check("ensure_project")
        return keystone_api.Resource(
            name, self.projects.setdefault((name, domain_id), self._new_id("project"))
        )

    def ensure_role(self, name: str) -> keystone_api.Resource:
        self._check("ensure_role")
        return keystone_api.Resource(name, self.roles.setdefault(name, self._new_id("role")))

    def ensure_user(
        self, name: str, password: str, domain_id: str, project_id: str | None = None
    ) -> keystone_api.Resource:
        self._check("ensure_user")
        user = self.users.get((name, domain_id))
        if user is None:
            user = self.users[(name, domain_id)] = User(name, self._new_id("user"), password, domain_id)
        user.password = password
        return keystone_api.Resource(name, user.id)

    def grant_role(self, role_id: str, user_id: str, project_id: str) -> None:
        self._check("grant_role")
        self.grants.add((role_id, user_id, project_id))

    def ensure_region(self, region: str) -> None:
        self._check("ensure_region")
        self.regions.add(region)

    def ensure_service(self, name: str, service_type: str, description: str) -> str:
        self._check("ensure_service")
        return self.services.setdefault((name, service_type), self._new_id("service"))

    def ensure_endpoint(self, service_id: str, interface: str, url: str, region: str) -> None:
        self._check("ensure_endpoint")
        self.endpoints[(service_id, interface, region)] = url

    # -- what tests ask --------------------------------------------------------

    def user(self, name_prefix: str) -> User:
        (user,) = [u for (name, _), u in self.users.items() if name.startswith(name_prefix)]
        return user

    def roles_of(self, user: User) -> set[str]:
        names = {v: k for k, v in self.roles.items()}
        return {names[r] for r, u, _ in self.grants if u == user.id}

    def catalog(self, name: str) -> dict[str, str]:
        service_id = next(v for (n, _), v in self.services.items() if n == name)
        return {i: url for (s, i, _), url in self.endpoints.items() if s == service_id}

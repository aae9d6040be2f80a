"""A small Keystone v3 REST client for the charm's own administration (urllib, with timeouts).

The charm runs in the same pod as keystone, so it talks to
``http://localhost:5000/v3`` directly, as the admin user bootstrap created.
Every ``ensure_*`` method is idempotent: it finds the object first and creates
or updates it only when needed.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://localhost:5000/v3"


class UnavailableError(Exception):
    """Keystone does not answer (not started yet, restarting)."""


class APIError(Exception):
    """Keystone answered with an error."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


@dataclasses.dataclass(frozen=True)
class Resource:
    """A keystone object: name and id."""

    name: str
    id: str


class KeystoneAPI:
    """Keystone v3 administration through its REST API."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 10.0, ca: str = "") -> None:
        """``ca``: the PEM of the CA that signed the certificate keystone serves, when it serves https."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None
        self._context: ssl.SSLContext | None = None
        if ca:
            # the charm calls its own pod on localhost, a name the certificate does not have: the
            # chain is verified against the unit's own CA, the host name cannot be
            self._context = ssl.create_default_context(cadata=ca)
            self._context.check_hostname = False

    # -- transport ------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["X-Auth-Token"] = self._token
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
                raw = response.read()
                return dict(response.headers), (json.loads(raw) if raw else {})
        except urllib.error.HTTPError as e:
            if e.code in (502, 503, 504):
                raise UnavailableError(f"HTTP {e.code}") from None
            detail = e.read().decode(errors="replace")[:200]
            raise APIError(method, path, e.code, detail) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise UnavailableError(str(e)) from None

    def _get(self, path: str, **query: str) -> dict[str, Any]:
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return self._call("GET", path + suffix)[1]

    # -- session --------------------------------------------------------------

    def answering(self) -> bool:
        """Tell whether keystone answers its version document."""
        try:
            self._call("GET", "")
        except (UnavailableError, APIError):
            return False
        return True

    def authenticate(
        self, username: str, password: str, *, project: str = "admin", domain: str = "default"
    ) -> None:
        """Get a project-scoped token for the admin user."""
        self._token = None
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": username, "domain": {"id": domain}, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": {"id": domain}}},
            }
        }
        headers, _ = self._call("POST", "/auth/tokens", body)
        token = headers.get("X-Subject-Token") or headers.get("x-subject-token")
        if not token:
            raise APIError("POST", "/auth/tokens", 0, "no token in the answer")
        self._token = token

    # -- finders --------------------------------------------------------------

    def _find(self, collection: str, name: str, **query: str) -> dict[str, Any] | None:
        found = self._get(f"/{collection}", name=name, **query).get(collection, [])
        return found[0] if found else None

    def find_domain(self, name: str) -> Resource | None:
        """Find the domain called ``name``."""
        found = self._find("domains", name)
        return Resource(found["name"], found["id"]) if found else None

    def find_user(self, name: str, domain_id: str) -> Resource | None:
        """Find the user called ``name`` in a domain."""
        found = self._find("users", name, domain_id=domain_id)
        return Resource(found["name"], found["id"]) if found else None

    def find_project(self, name: str, domain_id: str) -> Resource | None:
        """Find the project called ``name`` in a domain."""
        found = self._find("projects", name, domain_id=domain_id)
        return Resource(found["name"], found["id"]) if found else None

    # -- ensure ---------------------------------------------------------------

    def ensure_domain(self, name: str, description: str = "") -> Resource:
        """Return the domain ``name``, created if missing."""
        found = self.find_domain(name)
        if found:
            return found
        created = self._call("POST", "/domains", {"domain": {"name": name, "description": description}})[1]
        return Resource(name, created["domain"]["id"])

    def ensure_project(self, name: str, domain_id: str, description: str = "") -> Resource:
        """Return the project ``name`` in a domain, created if missing."""
        found = self.find_project(name, domain_id)
        if found:
            return found
        body = {"project": {"name": name, "domain_id": domain_id, "description": description}}
        return Resource(name, self._call("POST", "/projects", body)[1]["project"]["id"])

    def ensure_role(self, name: str) -> Resource:
        """Return the role ``name``, created if missing."""
        found = self._find("roles", name)
        if found:
            return Resource(found["name"], found["id"])
        return Resource(name, self._call("POST", "/roles", {"role": {"name": name}})[1]["role"]["id"])

    def ensure_user(
        self, name: str, password: str, domain_id: str, project_id: str | None = None
    ) -> Resource:
        """Return the user ``name`` with this password, created or updated."""
        found = self.find_user(name, domain_id)
        if found:
            self._call("PATCH", f"/users/{found.id}", {"user": {"password": password, "enabled": True}})
            return found
        user: dict[str, Any] = {"name": name, "password": password, "domain_id": domain_id, "enabled": True}
        if project_id:
            user["default_project_id"] = project_id
        return Resource(name, self._call("POST", "/users", {"user": user})[1]["user"]["id"])

    def grant_role(self, role_id: str, user_id: str, project_id: str) -> None:
        """Give a user a role on a project (idempotent in keystone)."""
        self._call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")

    def ensure_region(self, region: str) -> None:
        """Create the region if missing."""
        if region not in {r.get("id") for r in self._get("/regions").get("regions", [])}:
            self._call("POST", "/regions", {"region": {"id": region}})

    def ensure_service(self, name: str, service_type: str, description: str) -> str:
        """Return the id of the catalog service ``name`` of this type, created if missing."""
        for service in self._get("/services", type=service_type).get("services", []):
            if service.get("name") == name:
                return service["id"]
        body = {"service": {"name": name, "type": service_type, "description": description, "enabled": True}}
        return self._call("POST", "/services", body)[1]["service"]["id"]

    def ensure_endpoint(self, service_id: str, interface: str, url: str, region: str) -> None:
        """Create or update the catalog endpoint of a service for one interface and region, at this URL."""
        endpoints = self._get("/endpoints", service_id=service_id, interface=interface, region_id=region)
        for endpoint in endpoints.get("endpoints", []):
            if endpoint.get("url") != url:
                self._call("PATCH", f"/endpoints/{endpoint['id']}", {"endpoint": {"url": url}})
            return
        body = {
            "endpoint": {
                "service_id": service_id,
                "interface": interface,
                "url": url,
                "region_id": region,
                "enabled": True,
            }
        }
        self._call("POST", "/endpoints", body)

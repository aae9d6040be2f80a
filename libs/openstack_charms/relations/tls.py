"""TLS: the service's own certificate (``tls-certificates``), CAs to trust (``certificate_transfer``).

Both interfaces go through Canonical's PyPI libraries
(``charmlibs-interfaces-tls-certificates`` and
``charmlibs-interfaces-certificate-transfer``), which pull in pydantic and
cryptography: a large import. So the library object is built only when it can
have work to do, and that decision is taken in the charm's constructor, where
the library must register its observers to see the current event:

- the endpoint has a relation (known from the ``relation-ids`` call every
  handler makes anyway, cached for the hook), or
- the hook is one of the endpoint's own relation hooks: in ``relation-broken``
  the relation being removed is no longer listed, yet the library must run to
  remove the private key and certificate secrets it kept for it.

In every other hook (a charm without these relations, most hooks of most
charms) nothing is imported. The libraries' other observers (leader-elected,
secret-expired, secret-remove for certificate renewal) only matter while a
relation exists, which is exactly when the object is built.

The base charm observes every event before any handler exists, so the charm
reconciles before a library's own observer runs in the same hook. The
certificates handler therefore calls the library's public ``sync()`` itself,
before reading, in the hooks where the request or the answer can change (the
endpoint's and the ingress endpoints' relation hooks, since ingress host names
go into the request; install, start, upgrade, leader change, secret expiry).
On the endpoint's own relation hooks the library's observer runs ``sync`` a
second time; that is idempotent and costs a few secret reads on rare hooks.

In every other hook (config-changed, update-status, pebble-ready, other
relations: most hooks) the library is not even imported: the certificate and
key the unit serves are kept in a unit-owned Juju secret (``tls-certificate``)
written whenever the library hands out a new one, and read back with one
``secret-get``. The library's import (pydantic, cryptography) costs more than
a whole steady-state hook of an API charm; this keeps it to the hooks where a
certificate can change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import ops

from .base import Incomplete, RelationHandler, load_json

if TYPE_CHECKING:
    from charmlibs.interfaces.certificate_transfer import CertificateTransferRequires
    from charmlibs.interfaces.tls_certificates import (
        CertificateRequestAttributes,
        ProviderCapabilities,
        TLSCertificatesRequiresV4,
    )

    from .base import HandlerHost

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TLSContext:
    """A unit's certificate and key, and where the charm puts them in the workload container."""

    certificate: str
    private_key: str
    ca: str
    chain: str
    """The whole chain in PEM, as the provider gave it (the certificate first)."""
    certificate_path: str
    private_key_path: str
    ca_path: str

    @property
    def server_chain(self) -> str:
        """Return what a server presents: the certificate, then any intermediate CAs (without the root)."""
        blocks = [self.certificate.strip()]
        for block in _pem_blocks(self.chain):
            if block not in blocks and block != self.ca.strip():
                blocks.append(block)
        return "\n".join(blocks) + "\n"


@dataclasses.dataclass(frozen=True)
class CAContext:
    """CA certificates to trust, as one PEM bundle, and where the charm puts it."""

    bundle: str
    path: str


def _pem_blocks(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end for part in text.split(end) if part.strip()]


def _hook_is_for(hook: str, endpoints: Sequence[str]) -> bool:
    """Whether ``hook`` is a relation hook of one of ``endpoints``."""
    return any(hook.startswith(f"{endpoint}-relation-") for endpoint in endpoints)


#: hooks after which this unit's request may have to change or a certificate may have come
SYNC_HOOKS = frozenset({"install", "start", "upgrade-charm", "leader-elected", "secret-expired"})
#: hooks where the library has to run (its own secrets may be involved), besides the above
LIBRARY_HOOKS = SYNC_HOOKS | {"secret-remove", "secret-changed"}
#: the unit-owned secret holding what the unit serves, read in hooks that do not need the library
CACHE_LABEL = "tls-certificate"


class CertificatesRequirer(RelationHandler[TLSContext]):
    """Requests a certificate for each unit (its own key, never shared) and serves it when issued."""

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str,
        *,
        directory: str,
        names: Callable[[], tuple[str, list[str]]],
        names_from: Sequence[str] = (),
    ) -> None:
        """``names`` gives the certificate's names; ``names_from``, the endpoints those come from."""
        super().__init__(host, endpoint)
        self.certificate_path = f"{directory}/cert.pem"
        self.private_key_path = f"{directory}/key.pem"
        self.ca_path = f"{directory}/ca.pem"
        self.names = names
        self._request_hooks = (endpoint, *names_from)
        self._synced = False
        self.library: TLSCertificatesRequiresV4 | None = None
        hook = host.hook
        own_hook = _hook_is_for(hook, (endpoint,))
        if own_hook or (self.related and (hook in LIBRARY_HOOKS or _hook_is_for(hook, self._request_hooks))):
            self.library = self._build_library()

    def _build_library(self) -> TLSCertificatesRequiresV4:
        from charmlibs.interfaces import tls_certificates as tls

        return tls.TLSCertificatesRequiresV4(
            cast("ops.CharmBase", self.host),  # the library takes the charm, which the host is
            self.endpoint,
            certificate_requests=self._requests,
            mode=tls.Mode.UNIT,
        )

    def _requests(self, _capabilities: ProviderCapabilities | None) -> list[CertificateRequestAttributes]:
        from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes

        common_name, names = self.names()
        return [CertificateRequestAttributes(common_name=common_name, sans_dns=names)]

    def _sync(self) -> None:
        if self._synced or self.library is None or not self.related:
            return
        self._synced = True
        # Other hooks (config-changed, update-status, pebble-ready, other
        # relations) cannot change the request or the answer; skipping them
        # saves the library's half a dozen secret reads there.
        hook = self.host.hook
        if hook in SYNC_HOOKS or _hook_is_for(hook, self._request_hooks):
            self.library.sync()

    def publish(self) -> None:
        """Send (or renew) this unit's certificate request; idempotent."""
        self._sync()
        if not self.related and _hook_is_for(self.host.hook, (self.endpoint,)):
            self._forget()

    def get_context(self) -> TLSContext:
        """Return the certificate this unit serves, or raise naming what is missing."""
        if self.library is None:
            cached = self._cached()
            if cached is not None:
                return cached
            # nothing cached yet (first hook after an upgrade): ask the library
            self.library = self._build_library()
        context = self._from_library()
        self._remember(context)
        return context

    def _paths(self) -> dict[str, str]:
        return {
            "certificate_path": self.certificate_path,
            "private_key_path": self.private_key_path,
            "ca_path": self.ca_path,
        }

    def _cached(self) -> TLSContext | None:
        try:
            content = self.host.model.get_secret(label=CACHE_LABEL).get_content()
            return TLSContext(
                certificate=content["certificate"],
                private_key=content["private-key"],
                ca=content["ca-certificate"],
                chain=content["chain"],
                **self._paths(),
            )
        except (ops.SecretNotFoundError, KeyError):
            return None

    def _remember(self, context: TLSContext) -> None:
        content = {
            "certificate": context.certificate,
            "private-key": context.private_key,
            "ca-certificate": context.ca,
            "chain": context.chain,
        }
        try:
            secret = self.host.model.get_secret(label=CACHE_LABEL)
        except ops.SecretNotFoundError:
            self.host.unit.add_secret(content, label=CACHE_LABEL, description="the TLS certificate served")
            return
        if secret.get_content() != content:
            secret.set_content(content)

    def _forget(self) -> None:
        with contextlib.suppress(ops.SecretNotFoundError):
            self.host.model.get_secret(label=CACHE_LABEL).remove_all_revisions()

    def _from_library(self) -> TLSContext:
        self._sync()
        library = self.library
        if library is None:
            raise Incomplete("a certificate (the TLS library is not loaded in this hook)")
        try:
            private_key = library.private_key
        except (ops.SecretNotFoundError, ops.ModelError, KeyError, ValueError) as e:
            # the library keeps this unit's key in a unit-owned secret: nothing the provider sent
            raise Incomplete(
                f"this unit's private key (its secret is unusable: {type(e).__name__})"
            ) from None
        if private_key is None:
            raise Incomplete("this unit's private key (not generated yet)")
        now = datetime.datetime.now(datetime.UTC)
        # Matching on the key rather than on the exact request keeps the
        # current certificate in service while a re-request (new names) is
        # being signed, instead of an outage until the provider answers.
        candidates = [
            c
            for c in library.get_provider_certificates()
            if not c.revoked
            and c.certificate.expiry_time > now
            and c.certificate.matches_private_key(private_key)
        ]
        if not candidates:
            errors = [
                e
                for e in library.get_request_errors()
                if e.certificate_signing_request.matches_private_key(private_key)
            ]
            if errors:
                raise Incomplete(f"a certificate (request denied: {errors[0].error.message})")
            raise Incomplete(f"a certificate for {self.host.unit.name}")
        issued = max(candidates, key=lambda c: c.certificate.expiry_time)
        chain = [str(c).strip() for c in issued.chain] or [str(issued.certificate).strip()]
        return TLSContext(
            certificate=str(issued.certificate).strip() + "\n",
            private_key=str(private_key).strip() + "\n",
            ca=str(issued.ca).strip() + "\n",
            chain="\n".join(chain) + "\n",
            **self._paths(),
        )


class CATransferRequirer(RelationHandler[CAContext]):
    """Receives CA certificates to trust (for example the CA behind keystone's public URL).

    The library runs only in the endpoint's own relation hooks, where it writes
    this side's version hint; the certificates themselves are read straight from
    the provider's databags (v1: app ``certificates``, a JSON list; v0: the
    first unit's ``chain`` JSON list, else its ``ca``), which is all the
    library's reader does, without its import cost in every other hook.
    """

    def __init__(self, host: HandlerHost, endpoint: str, *, path: str) -> None:
        super().__init__(host, endpoint)
        self.path = path
        self.library: CertificateTransferRequires | None = None
        if _hook_is_for(host.hook, (endpoint,)):
            from charmlibs.interfaces.certificate_transfer import CertificateTransferRequires

            self.library = CertificateTransferRequires(cast("ops.CharmBase", host), endpoint)

    def get_context(self) -> CAContext:
        """Every CA of every relation, sorted so the bundle is stable; Incomplete while there is none."""
        blocks = sorted(
            {block for r in self.relations for cert in _transferred(r) for block in _pem_blocks(cert)}
        )
        if not blocks:
            raise Incomplete("certificates")
        return CAContext(bundle="\n".join(blocks) + "\n", path=self.path)


def _transferred(relation: ops.Relation) -> list[str]:
    """The certificates a certificate_transfer provider sent on one relation (malformed: none)."""
    app_data: Mapping[str, str] = relation.data[relation.app] if relation.app else {}
    certificates = load_json(app_data, "certificates", [])
    if not certificates and app_data.get("version", "0") != "1" and relation.units:
        unit_data = relation.data[min(relation.units, key=lambda u: u.name)]
        ca = unit_data.get("ca", "")
        # the old library wrote ``ca`` as plain PEM, the current one as a JSON string
        certificates = load_json(unit_data, "chain", None) or [
            load_json(unit_data, "ca", "") if ca.startswith('"') else ca
        ]
    if not isinstance(certificates, list):
        return []
    return [c for c in certificates if isinstance(c, str) and "BEGIN CERTIFICATE" in c]

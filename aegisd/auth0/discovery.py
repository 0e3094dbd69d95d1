"""Reading a tenant's OpenID discovery document into the endpoints aegisd uses.

Owns the checks of ``reference/auth0-protocol.md`` §6 on ``/.well-known/openid-configuration``:
the ``issuer`` equals ours exactly (trailing slash included), the CIBA, token, revocation and
JWKS endpoints are on the issuer's own host (client secrets go there), CIBA poll mode is
advertised, and the configured client authentication method and assertion algorithm are
offered. Pure: it is handed the decoded document, and must not fetch anything (``http.py``
does, when first needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import final
from urllib.parse import urlsplit

from aegisd.config import Auth0Config
from aegisd.errors import UpstreamError

__all__ = ["DiscoveryError", "Endpoints", "parse_discovery"]


class DiscoveryError(UpstreamError):
    """The tenant's OpenID discovery document is unusable for aegisd (wrong issuer, no CIBA
    poll mode, endpoints on another host, client authentication method not offered)."""

    default_message = "the Auth0 discovery document is unusable"


@final
@dataclass(frozen=True)
class Endpoints:
    """Where to send what, from discovery (reference §6).

    Attributes:
        issuer: the issuer with its trailing slash.
        bc_authorize: ``backchannel_authentication_endpoint``.
        token: ``token_endpoint``.
        jwks_uri: ``jwks_uri``.
        revocation: ``revocation_endpoint`` (``{issuer}oauth/revoke`` when not advertised).
    """

    issuer: str
    bc_authorize: str
    token: str
    jwks_uri: str
    revocation: str = ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _same_host_url(doc: Mapping[str, object], key: str, issuer: str) -> str | None:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        return None
    # The client secret goes to these URLs: never to another host than the issuer.
    if _origin(value) != _origin(issuer):
        raise DiscoveryError(f"discovery {key} is not on the issuer's host")
    return value


def parse_discovery(doc: Mapping[str, object], issuer: str, cfg: Auth0Config) -> Endpoints:
    """The endpoints, or ``DiscoveryError`` saying what to check.

    Raises:
        DiscoveryError: the document does not fit (see the module docstring).
    """
    named = doc.get("issuer")
    if named != issuer:
        shown = named[:200] if isinstance(named, str) else "nothing"
        raise DiscoveryError(
            f"discovery names issuer {shown!r}, expected {issuer!r} "
            "(check auth0.domain / auth0.issuer; the trailing slash matters)"
        )
    urls: dict[str, str] = {}
    for key in ("backchannel_authentication_endpoint", "token_endpoint", "jwks_uri"):
        value = _same_host_url(doc, key, issuer)
        if value is None:
            raise DiscoveryError(
                f"discovery lacks {key}"
                + (
                    "; is CIBA enabled on this tenant?"
                    if key == "backchannel_authentication_endpoint"
                    else ""
                )
            )
        urls[key] = value
    modes = doc.get("backchannel_token_delivery_modes_supported")
    if not isinstance(modes, list) or "poll" not in modes:
        raise DiscoveryError(
            "the tenant does not advertise CIBA poll mode "
            "(backchannel_token_delivery_modes_supported lacks 'poll'); "
            "aegisd needs CIBA in poll mode"
        )
    methods = doc.get("token_endpoint_auth_methods_supported")
    if isinstance(methods, list) and cfg.client_auth not in methods:
        raise DiscoveryError(f"the tenant does not offer client authentication {cfg.client_auth!r}")
    if cfg.client_auth == "private_key_jwt":
        algs = doc.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algs, list) and cfg.signing_alg not in algs:
            raise DiscoveryError(f"the tenant does not accept {cfg.signing_alg} client assertions")
    # Real tenants advertise /oauth/revoke (reference §6); fall back to that path if not.
    revocation = _same_host_url(doc, "revocation_endpoint", issuer) or issuer + "oauth/revoke"
    return Endpoints(
        issuer=issuer,
        bc_authorize=urls["backchannel_authentication_endpoint"],
        token=urls["token_endpoint"],
        jwks_uri=urls["jwks_uri"],
        revocation=revocation,
    )

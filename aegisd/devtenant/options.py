"""Dev tenant options and fault switches, as msgspec Structs.

Owns every knob of the local tenant: ports, CIBA timing, token lifetimes, Token Vault and
Management API behaviour, and the fault switches that ``POST /_dev/faults`` replaces at run
time. Where Auth0's behaviour is uncertain (``reference/auth0-protocol.md`` marks it ``[?]``)
the choice is an option here, with Auth0's most likely behaviour as the default. This module
holds plain data only: no I/O, no clock, no state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

__all__ = ["DEFAULT_API_AUDIENCE", "DEFAULT_USER_ID", "DevTenantOptions", "Faults"]

DEFAULT_USER_ID: Final = "auth0|aegis-demo"
DEFAULT_API_AUDIENCE: Final = "https://aegis.dev/api"


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fault switches for reliability tests; every share is a probability in 0..1.

    Faults hit the Auth0-like endpoints (``/bc-authorize``, ``/oauth/token``, ``/.well-known/``,
    ``/api/v2/``) and the demo API; never the phone or the ``/_dev/`` control endpoints, so a
    test can always switch faults off again. ``paths`` narrows them to some path prefixes.

    Attributes:
        latency_ms: delay added before every affected answer.
        share_5xx: share of answers replaced by ``status_5xx`` with an Auth0-style JSON body.
        status_5xx: the 5xx status used for ``share_5xx``.
        burst_429: the next N affected requests answer 429 ``too_many_requests`` (counts down).
        retry_after: seconds announced by the 429s in ``Retry-After`` and ``x-ratelimit-reset``.
        share_malformed_json: share of answers that are a 200 with a truncated JSON body.
        share_drop: share of requests whose connection is closed in the middle of the answer.
        share_timeout: share of requests that hang for ``timeout_seconds`` and then drop.
        timeout_seconds: how long a "timeout" request hangs.
        paths: path prefixes the faults apply to; empty means every affected endpoint.
    """

    latency_ms: int = 0
    share_5xx: float = 0.0
    status_5xx: int = 503
    burst_429: int = 0
    retry_after: int = 1
    share_malformed_json: float = 0.0
    share_drop: float = 0.0
    share_timeout: float = 0.0
    timeout_seconds: float = 30.0
    paths: list[str] = []

    def __post_init__(self) -> None:
        for name in ("share_5xx", "share_malformed_json", "share_drop", "share_timeout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not 500 <= self.status_5xx <= 599:
            raise ValueError("status_5xx must be a 5xx status")
        if self.latency_ms < 0 or self.burst_429 < 0 or self.retry_after < 0:
            raise ValueError("latency_ms, burst_429 and retry_after must not be negative")
        if self.timeout_seconds < 0:
            raise ValueError("timeout_seconds must not be negative")


class DevTenantOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the dev tenant behaves. Every field has a default that mirrors Auth0.

    Attributes:
        port: TCP port on 127.0.0.1; 0 picks a free one (read it back from ``DevTenant.port``).
        state_dir: where the signing key, clients and ``users.toml`` persist, and where
            ``aegisd.toml``/``secrets.env`` are written; ``None`` keeps everything in memory.
        interval: CIBA polling interval in seconds announced by ``/bc-authorize``.
        default_expiry: ``expires_in`` when the client sends no ``requested_expiry``.
        max_requested_expiry: upper bound of ``requested_expiry`` (Guardian push allows 300).
        auto_approve_ms: approve every CIBA request this long after it starts; ``None`` waits
            for the phone.
        slow_down_enforced: answer ``slow_down`` when a client polls faster than the interval.
        slow_down_tolerance: seconds a poll may come early without ``slow_down``.
        ciba_per_user_per_minute: Auth0's per-user cap on CIBA starts; ``None`` disables it.
        api_audience: the one registered API; CIBA access tokens for it are RS256 JWTs.
        rar_types: ``authorization_details`` types registered on that API.
        rar_omits_id_token: approvals of RAR requests come without an ``id_token``, as
            Auth0's RAR token-response sample shows (``[?]``: the default sends one).
        user_id, user_email: the approver created in a fresh tenant (with GitHub and Google
            accounts connected).
        id_token_ttl, access_token_ttl, mgmt_token_ttl, provider_token_ttl: lifetimes in s.
        keep_old_key_seconds: after a key rotation the old key stays in the JWKS this long;
            0 drops it at once (exercises the daemon's unknown-``kid`` refetch).
        client_public_key_pem: a registered RSA public key that enables ``private_key_jwt``
            for the Aegis client.
        vault_enabled: ``False`` refuses every Token Vault exchange (403).
        vault_refuses_opaque: Token Vault refuses opaque CIBA access tokens (401), as Auth0
            does (their audience is ``/userinfo``: no Custom API Client is linked to it);
            ``False`` accepts them from the application, only for old experiments.
        vault_omits_scope: leave ``scope`` out of Token Vault answers (Auth0 may, ``[?]``).
        mgmt_scopes: scopes granted to the Management API client.
        mgmt_identity_tokens: ``identities[]`` carry ``access_token``; ``False`` models a
            connection with Token Vault enabled, whose tokens Auth0 no longer writes there.
        demo_api_connection: the connection whose provider tokens the demo API accepts.
        demo_repos: repositories the demo API starts with.
        seed: seed for the fault switches' random draws (``None``: unpredictable).
        faults: the fault switches in force at start.
    """

    port: int = 0
    state_dir: Path | None = None
    interval: float = 5.0
    default_expiry: int = 300
    max_requested_expiry: int = 300
    auto_approve_ms: int | None = None
    slow_down_enforced: bool = True
    slow_down_tolerance: float = 0.2
    ciba_per_user_per_minute: int | None = 5
    api_audience: str = DEFAULT_API_AUDIENCE
    rar_types: list[str] = msgspec.field(
        default_factory=lambda: ["urn:auth0:schemas:authorization-details:v1:aegis"]
    )
    rar_omits_id_token: bool = False
    user_id: str = DEFAULT_USER_ID
    user_email: str = "demo@aegis.dev"
    id_token_ttl: int = 36000
    access_token_ttl: int = 86400
    mgmt_token_ttl: int = 86400
    provider_token_ttl: int = 3600
    keep_old_key_seconds: float = 600.0
    client_public_key_pem: str | None = None
    vault_enabled: bool = True
    vault_refuses_opaque: bool = True
    vault_omits_scope: bool = False
    mgmt_scopes: list[str] = msgspec.field(
        default_factory=lambda: ["read:users", "read:user_idp_tokens"]
    )
    mgmt_identity_tokens: bool = True
    demo_api_connection: str = "github"
    demo_repos: list[str] = msgspec.field(
        default_factory=lambda: ["aegis-demo", "scratch", "old-experiments"]
    )
    seed: int | None = None
    faults: Faults = msgspec.field(default_factory=Faults)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        if not 1 <= self.default_expiry <= self.max_requested_expiry:
            raise ValueError("default_expiry must be 1..max_requested_expiry")
        if self.auto_approve_ms is not None and self.auto_approve_ms < 0:
            raise ValueError("auto_approve_ms must not be negative")
        if self.ciba_per_user_per_minute is not None and self.ciba_per_user_per_minute < 1:
            raise ValueError("ciba_per_user_per_minute must be at least 1 (or None)")

"""Request counters of one dev tenant, for tests and benchmarks that count Auth0 traffic.

Owns the counters only; the endpoints increment them. No I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TenantStats"]


@dataclass
class TenantStats:
    """What the tenant has been asked, counted.

    Attributes:
        requests: every HTTP request, faulted or not.
        bc_authorize: ``/bc-authorize`` calls (``bc_authorize_ok`` of them started a request).
        polls: CIBA polls per ``auth_req_id`` (``total_polls`` sums them).
        slow_downs: polls answered ``slow_down``.
        ciba_tokens: successful CIBA polls (tokens issued).
        token_vault_exchanges: Token Vault exchange attempts; ``token_vault_ok`` succeeded,
            ``token_vault_refused`` got a 4xx.
        vault_scope_params: exchanges that carried the (Early Access) ``scope`` parameter.
        revocations: ``/oauth/revoke`` requests that revoked a refresh token.
        client_credentials: Management API token grants.
        mgmt_calls: Management API requests under ``/api/v2/``.
        discovery, jwks: fetches of the two documents.
        demo_api_calls: requests to ``/demo-api/``; ``demo_redirect_followed`` counts visits
            to the redirect target (a proxy must not follow redirects).
        approvals, denials: answers given on the phone, by API or automatically.
        faults: injected faults by kind (latency, 429, 5xx, drop, malformed_json, timeout).
    """

    requests: int = 0
    bc_authorize: int = 0
    bc_authorize_ok: int = 0
    polls: Counter[str] = field(default_factory=Counter)
    slow_downs: int = 0
    ciba_tokens: int = 0
    token_vault_exchanges: int = 0
    token_vault_ok: int = 0
    token_vault_refused: int = 0
    vault_scope_params: int = 0
    revocations: int = 0
    client_credentials: int = 0
    mgmt_calls: int = 0
    discovery: int = 0
    jwks: int = 0
    demo_api_calls: int = 0
    demo_redirect_followed: int = 0
    approvals: int = 0
    denials: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def total_polls(self) -> int:
        return sum(self.polls.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (``GET /_dev/stats``)."""
        return {
            "requests": self.requests,
            "bc_authorize": self.bc_authorize,
            "bc_authorize_ok": self.bc_authorize_ok,
            "polls": dict(self.polls),
            "total_polls": self.total_polls,
            "slow_downs": self.slow_downs,
            "ciba_tokens": self.ciba_tokens,
            "token_vault_exchanges": self.token_vault_exchanges,
            "token_vault_ok": self.token_vault_ok,
            "token_vault_refused": self.token_vault_refused,
            "vault_scope_params": self.vault_scope_params,
            "revocations": self.revocations,
            "client_credentials": self.client_credentials,
            "mgmt_calls": self.mgmt_calls,
            "discovery": self.discovery,
            "jwks": self.jwks,
            "demo_api_calls": self.demo_api_calls,
            "demo_redirect_followed": self.demo_redirect_followed,
            "approvals": self.approvals,
            "denials": self.denials,
            "faults": dict(self.faults),
        }

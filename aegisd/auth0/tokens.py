"""Values that carry tokens, and the one way to name a token without revealing it.

Owns ``CibaStart``, ``Approval`` and ``Credential`` (what ``Auth0Client`` hands the broker)
and ``token_fingerprint`` (what the audit and logs show instead of a token). Every class here
that holds a token or a request handle keeps it out of ``repr``: a stray ``log.debug(x)`` or a
traceback must not leak it. Plain data only: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "Approval",
    "CibaStart",
    "Credential",
    "CredentialPath",
    "token_fingerprint",
]

CredentialPath = Literal["ciba", "token_vault", "management"]

_FINGERPRINT_HEX: Final = 12


def token_fingerprint(token: str) -> str:
    """A short, stable, non-reversible name for a token: ``"sha256:"`` + 12 hex digits.

    Enough to tell tokens apart in the audit and to match a token someone reports, far too
    little to help guess it.
    """
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:_FINGERPRINT_HEX]


@dataclass(frozen=True)
class CibaStart:
    """A started CIBA request, as answered by ``/bc-authorize``.

    Attributes:
        auth_req_id: Auth0's handle for the request (hidden from ``repr``: with the client's
            credentials it can be exchanged for tokens).
        expires_in: seconds Auth0 gives the person to answer.
        interval: the polling interval Auth0 asked for (5 when it named none).
        expires_at: wall-clock (UNIX seconds) time the request expires, for display and audit.
        started_at: ``trio.current_time()`` just before the request was sent; the local
            deadline is ``started_at + expires_in``, never later than Auth0's own.
        authorization_details: the RAR details sent with the request, if any (an approval
            of a RAR request may come without an ID token, as Auth0's RAR sample shows).
    """

    auth_req_id: str = field(repr=False)
    expires_in: float
    interval: float
    expires_at: float
    started_at: float
    authorization_details: list[dict[str, object]] | None = field(default=None, repr=False)

    @property
    def request_fingerprint(self) -> str:
        """``token_fingerprint`` of ``auth_req_id``, for logs and the audit."""
        return token_fingerprint(self.auth_req_id)


@dataclass(frozen=True)
class Approval:
    """What an approved CIBA request yielded, after the ID token passed every check.

    Attributes:
        access_token: the CIBA access token (opaque, or a JWT when ``audience`` is set).
        id_token_claims: the verified ID token's claims.
        refresh_token: present when ``offline_access`` was requested and granted.
        expires_at: wall-clock expiry of ``access_token`` (UNIX seconds).
        scope: the granted scopes, space-separated.
        sub: the approver (equal to the configured ``auth0.user_id``).
        latency: seconds from sending ``/bc-authorize`` to receiving the tokens.
        authorization_details: the RAR details Auth0 echoed, if any.
        id_token_verified: ``False`` only for a RAR approval that came without an ID token
            (then ``sub`` is the configured approver the push was addressed to).
    """

    access_token: str = field(repr=False)
    id_token_claims: dict[str, object] = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float
    scope: str
    sub: str
    latency: float
    authorization_details: list[dict[str, object]] | None = field(default=None, repr=False)
    id_token_verified: bool = True


@dataclass(frozen=True)
class Credential:
    """A credential ready for one delivery.

    Attributes:
        access_token: the token itself (hidden from ``repr``).
        token_type: usually ``Bearer``.
        expires_at: wall-clock expiry (UNIX seconds), or ``None`` when nobody knows it (the
            Management API reports an ``expires_in`` stored at login, not a live countdown).
        scope: granted scopes, space-separated; empty when the issuer did not say.
        kind: the action's credential kind (``ciba_token`` or ``token_vault``).
        connection: the Auth0 connection it belongs to, if any.
        path: where it came from: ``ciba``, ``token_vault`` or ``management``.
        refusals: why earlier paths in the action's order did not yield it (for the audit).
        refresh_token_revocation: what became of the approval's refresh token: ``revoked``,
            ``revocation failed: …``, or ``None`` when the approval carried none.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_at: float | None
    scope: str
    kind: str
    connection: str | None
    path: CredentialPath
    refusals: tuple[str, ...] = ()
    refresh_token_revocation: str | None = None

    @property
    def fingerprint(self) -> str:
        """``token_fingerprint`` of the access token, for the audit."""
        return token_fingerprint(self.access_token)

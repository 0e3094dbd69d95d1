"""Revoking an approval's refresh token at ``/oauth/revoke`` once it has served its exchange.

Why: with ``offline_access`` every approval mints a refresh token. Kept, it would be a
standing credential that reaches Token Vault without another approval; Auth0's CIBA guide
also says a refresh token "is not needed and does not have any meaning in this context" and
asks to keep their number "within a reasonable manageable limit"
(``reference/auth0-protocol.md``
§11). aegisd therefore revokes it right after the Token Vault exchange, whatever its outcome.

Owns the request (Auth0's "Revoke refresh token": ``token`` plus the application's client
authentication, no ``token_type_hint`` since Auth0 documents none; Auth0 answers 200 with an
empty body, also for a token already revoked, as RFC 7009 §2.2 says) and the outcome as one
short audit string. It must not raise (a failed revocation
must not withhold a credential already obtained; it is audited instead), log the token, or
retry a refusal.
"""

from __future__ import annotations

import logging
from typing import final

from aegisd.auth0.http import Auth0Http, ClientIdentity
from aegisd.auth0.tokens import token_fingerprint
from aegisd.errors import AegisError

__all__ = ["RefreshTokenRevoker"]

log = logging.getLogger(__name__)


@final
class RefreshTokenRevoker:
    """Revokes refresh tokens issued to the application.

    Args:
        http: the Auth0 seam.
        identity: the application (the client the refresh token was issued to).
    """

    def __init__(self, http: Auth0Http, identity: ClientIdentity) -> None:
        self._http = http
        self._identity = identity
        self.revoked = 0
        self.failed = 0

    async def revoke(self, refresh_token: str) -> str:
        """``"revoked"``, or ``"revocation failed: …"`` (no token or foreign text in it)."""
        try:
            endpoints = await self._http.endpoints()
            reply = await self._http.send(
                "POST",
                endpoints.revocation,
                what="refresh token revocation",
                retry="idempotent",  # revoking twice is harmless (RFC 7009 §2.2)
                form={"token": refresh_token},
                identity=self._identity,
                empty_ok=True,
            )
        except AegisError as exc:
            outcome = f"revocation failed: {exc.message}"
        else:
            if reply.status == 200:
                self.revoked += 1
                log.info("refresh token %s revoked", token_fingerprint(refresh_token))
                return "revoked"
            code = f" {reply.error}" if reply.error else ""
            outcome = f"revocation failed: HTTP {reply.status}{code}"
        self.failed += 1
        log.warning("refresh token %s: %s", token_fingerprint(refresh_token), outcome)
        return outcome

    def state(self) -> dict[str, object]:
        return {
            "refresh_tokens_revoked": self.revoked,
            "refresh_token_revocations_failed": self.failed,
        }

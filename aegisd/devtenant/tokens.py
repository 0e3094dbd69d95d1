"""Tokens the tenant mints: CIBA ID/access/refresh tokens and Management API tokens.

Owns the claims of each token (``reference/auth0-protocol.md`` §2, §4, §6): the RS256 ID token
(``iss`` with trailing slash, ``sub``, ``aud`` = client id, ``iat``, ``exp``, ``auth_time``),
the access token (opaque without ``audience``, an RS256 JWT for the API with it), the refresh
token (only with ``offline_access``), the Management API JWT; and the registry of every value
issued, so Token Vault can recognise subject tokens and leak scans can look for them. Wall-clock
``wall`` and monotonic ``mono`` times are passed in; no I/O.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, final

from aegisd.devtenant.ciba import CibaRequest
from aegisd.devtenant.signing import KeySet

__all__ = ["AccessGrant", "RefreshGrant", "TokenMint"]


@dataclass(frozen=True)
class AccessGrant:
    """What an opaque access token stands for."""

    user_id: str
    client_id: str
    scope: tuple[str, ...]
    expires_at: float


@dataclass(frozen=True)
class RefreshGrant:
    user_id: str
    client_id: str
    scope: tuple[str, ...]
    audience: str | None


@final
class TokenMint:
    """Mints tokens and remembers every value it handed out."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        id_token_ttl: int,
        access_token_ttl: int,
        mgmt_token_ttl: int,
        rar_omits_id_token: bool = False,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._id_ttl = id_token_ttl
        self._access_ttl = access_token_ttl
        self._mgmt_ttl = mgmt_token_ttl
        self._rar_omits_id_token = rar_omits_id_token
        self._opaque: dict[str, AccessGrant] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self._issued: list[str] = []

    @property
    def mgmt_audience(self) -> str:
        return self._issuer + "api/v2/"

    def issued(self) -> list[str]:
        """Every token value minted so far (ID, access, refresh, Management API)."""
        return list(self._issued)

    def ciba_tokens(self, request: CibaRequest, *, wall: float) -> dict[str, Any]:
        """The 200 body of a successful CIBA poll."""
        now = int(wall)
        id_token = self._keys.sign(
            {
                "iss": self._issuer,
                "sub": request.user_id,
                "aud": request.client_id,
                "iat": now,
                "exp": now + self._id_ttl,
                "auth_time": int(request.auth_time if request.auth_time is not None else wall),
            }
        )
        scope = " ".join(request.scope)
        if request.audience is None:
            # No audience: Auth0 issues an opaque token good only for /userinfo (§2, I-AT)
            access_token = secrets.token_urlsafe(32)
            self._opaque[access_token] = AccessGrant(
                user_id=request.user_id,
                client_id=request.client_id,
                scope=tuple(request.scope),
                expires_at=wall + self._access_ttl,
            )
        else:
            claims: dict[str, Any] = {
                "iss": self._issuer,
                "sub": request.user_id,
                # Auth0 adds its /userinfo audience when openid is in the scope
                "aud": [request.audience, self._issuer + "userinfo"],
                "iat": now,
                "exp": now + self._access_ttl,
                "azp": request.client_id,
                "scope": scope,
                "jti": secrets.token_urlsafe(12),
            }
            if request.authorization_details is not None:
                claims["authorization_details"] = request.authorization_details
            access_token = self._keys.sign(claims)
        answer: dict[str, Any] = {
            "access_token": access_token,
            "id_token": id_token,
            "expires_in": self._access_ttl,
            "scope": scope,
            "token_type": "Bearer",
        }
        self._issued += [access_token, id_token]
        if request.authorization_details is not None and self._rar_omits_id_token:
            del answer["id_token"]  # Auth0's RAR token-response sample has none
        if "offline_access" in request.scope:
            refresh_token = secrets.token_urlsafe(48)
            self._refresh[refresh_token] = RefreshGrant(
                user_id=request.user_id,
                client_id=request.client_id,
                scope=tuple(request.scope),
                audience=request.audience,
            )
            answer["refresh_token"] = refresh_token
            self._issued.append(refresh_token)
        if request.authorization_details is not None:
            answer["authorization_details"] = request.authorization_details
        return answer

    def mgmt_token(self, client_id: str, scopes: list[str], *, wall: float) -> dict[str, Any]:
        """The 200 body of client_credentials for the Management API audience."""
        now = int(wall)
        scope = " ".join(scopes)
        token = self._keys.sign(
            {
                "iss": self._issuer,
                "sub": f"{client_id}@clients",
                "aud": self.mgmt_audience,
                "iat": now,
                "exp": now + self._mgmt_ttl,
                "azp": client_id,
                "scope": scope,
                "gty": "client-credentials",
            }
        )
        self._issued.append(token)
        return {
            "access_token": token,
            "expires_in": self._mgmt_ttl,
            "scope": scope,
            "token_type": "Bearer",
        }

    def opaque_grant(self, token: str, *, wall: float) -> AccessGrant | None:
        """The grant behind an unexpired opaque access token, if it is one of ours."""
        grant = self._opaque.get(token)
        if grant is None or grant.expires_at <= wall:
            return None
        return grant

    def is_opaque(self, token: str) -> bool:
        return token in self._opaque

    def refresh_grant(self, token: str) -> RefreshGrant | None:
        return self._refresh.get(token)

    def revoke_refresh(self, token: str, *, client_id: str) -> bool:
        """Forget a refresh token of ``client_id``; ``False`` if it was not one."""
        grant = self._refresh.get(token)
        if grant is None or grant.client_id != client_id:
            return False
        del self._refresh[token]
        return True

    def verify(self, token: str, *, mono: float, wall: float, audience: str) -> dict[str, Any]:
        """Claims of a JWT we signed for ``audience``.

        Raises:
            jwt.InvalidTokenError: not ours, wrong audience, or expired.
        """
        return self._keys.verify(
            token, mono=mono, wall=wall, audience=audience, issuer=self._issuer
        )

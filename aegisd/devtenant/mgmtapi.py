"""The Management API of the dev tenant: ``GET /api/v2/users/{id}`` for the IdP-token fallback.

Owns ``reference/auth0-protocol.md`` §4 as served: the bearer check (a JWT this tenant issued
for ``ISSUER + "api/v2/"``), the scope check (``read:users`` for the user, 403
``insufficient_scope`` without it; provider tokens only with ``read:user_idp_tokens``),
``fields``/``include_fields``, ``identities[]`` with GitHub's ``user_id`` as a JSON number, and
the ``x-ratelimit-*`` headers. Error bodies use the Management API shape (``statusCode``,
``error``, ``message``, ``errorCode``). It must not log tokens.
"""

from __future__ import annotations

from typing import Any, Final, final

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aegisd.devtenant.tenant import Tenant
from aegisd.devtenant.users import User

__all__ = ["MgmtApi"]

_REASONS: Final = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
_RATE_LIMIT: Final = 50


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": status, "error": _REASONS[status], "message": message, "errorCode": code},
        status_code=status,
    )


@final
class MgmtApi:
    """Management API endpoints bound to one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self._t = tenant

    def routes(self) -> list[Route]:
        return [Route("/api/v2/users/{user_id:path}", self.get_user, methods=["GET"])]

    def _user_body(self, user: User, *, with_tokens: bool) -> dict[str, Any]:
        local_id = user.user_id.split("|", 1)[-1]
        identities: list[dict[str, Any]] = [
            {
                "provider": user.user_id.split("|", 1)[0],
                "connection": "Username-Password-Authentication",
                "user_id": local_id,
                "isSocial": False,
            }
        ]
        wall = self._t.wall()
        for account in user.accounts:
            identity: dict[str, Any] = {
                "provider": account.provider,
                "connection": account.connection,
                "user_id": account.provider_user_id,  # GitHub's stays a JSON number
                "isSocial": True,
                "profileData": {"email": user.email},
            }
            if with_tokens:
                identity["access_token"] = account.access_token
                identity["expires_in"] = max(0, int(account.expires_at - wall))
            identities.append(identity)
        return {
            "user_id": user.user_id,
            "email": user.email,
            "email_verified": True,
            "name": user.name,
            "nickname": local_id,
            "identities": identities,
        }

    async def get_user(self, request: Request) -> Response:
        t = self._t
        t.stats.mgmt_calls += 1
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() != "bearer ":
            return _error(401, "Missing authentication", "invalid_token")
        try:
            claims = t.tokens.verify(
                auth[7:].strip(), mono=t.mono(), wall=t.wall(), audience=t.mgmt_audience
            )
        except jwt.InvalidTokenError:
            return _error(401, "Invalid token", "invalid_token")
        scopes = str(claims.get("scope", "")).split()
        if "read:users" not in scopes:
            return _error(
                403,
                "Insufficient scope, expected any of: read:users,read:current_user",
                "insufficient_scope",
            )
        user = t.users.get(request.path_params["user_id"])
        if user is None:
            return _error(404, "The user does not exist.", "inexistent_user")
        with_tokens = "read:user_idp_tokens" in scopes and t.options.mgmt_identity_tokens
        if with_tokens:
            # A fresh provider token, as if the person had just logged in through it.
            wall = t.wall()
            refreshed = [
                t.users.fresh_token(user.user_id, a, now=wall, ttl=t.options.provider_token_ttl)
                for a in user.accounts
            ]
            if any(refreshed):
                await t.persist_users()
        body = self._user_body(user, with_tokens=with_tokens)
        fields = [f for f in request.query_params.get("fields", "").split(",") if f]
        if fields:
            include = request.query_params.get("include_fields", "true").lower() != "false"
            body = {k: v for k, v in body.items() if (k in fields) == include}
        return JSONResponse(
            body,
            headers={
                "x-ratelimit-limit": str(_RATE_LIMIT),
                "x-ratelimit-remaining": str(_RATE_LIMIT - 1),
                "x-ratelimit-reset": str(int(t.wall()) + 1),
            },
        )

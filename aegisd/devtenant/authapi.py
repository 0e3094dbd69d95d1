"""The Authentication API of the dev tenant: discovery, JWKS, ``/bc-authorize``, ``/oauth/token``.

Owns the HTTP shape of ``reference/auth0-protocol.md`` §1-§4, §6 and §11: body parsing (form,
and JSON on ``/oauth/token`` as Auth0 accepts it), the OAuth error answers with their statuses
and headers, the grant dispatch (CIBA, Token Vault exchange, client_credentials for the
Management API), and ``/oauth/revoke``. Token Vault follows Auth0's client rules: a refresh
token is exchanged only by the client it was issued to, an access token only by the Custom API
Client (``resource_server``) linked to its audience (403 for any other client), and an opaque
access token is refused unless ``vault_refuses_opaque`` is off. Validation and state live in
``ciba.py``, ``clients.py``, ``tokens.py`` and ``users.py``; this module must not log request
bodies, secrets or tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, final
from urllib.parse import parse_qsl

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aegisd.devtenant.ciba import CibaError
from aegisd.devtenant.clients import Client, ClientAuthError
from aegisd.devtenant.tenant import Tenant

__all__ = [
    "CIBA_GRANT",
    "FEDERATED_TOKEN_TYPE",
    "SUBJECT_ACCESS_TOKEN",
    "SUBJECT_REFRESH_TOKEN",
    "VAULT_GRANT",
    "AuthApi",
]

CIBA_GRANT: Final = "urn:openid:params:grant-type:ciba"
VAULT_GRANT: Final = (
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
)
SUBJECT_ACCESS_TOKEN: Final = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_REFRESH_TOKEN: Final = "urn:ietf:params:oauth:token-type:refresh_token"
FEDERATED_TOKEN_TYPE: Final = "http://auth0.com/oauth/token-type/federated-connection-access-token"
_MAX_BODY: Final = 64 * 1024
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(CibaError):
    """An OAuth error answer: ``{"error", "error_description"}`` plus status and headers."""

    @classmethod
    def of(cls, exc: CibaError | ClientAuthError) -> OAuthError:
        if isinstance(exc, ClientAuthError):
            return cls(exc.error, exc.description, exc.status)
        return cls(exc.error, exc.description, exc.status, headers=exc.headers, extra=exc.extra)

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description, **self.extra}
        return JSONResponse(body, status_code=self.status, headers={**_NO_STORE, **self.headers})


async def read_params(request: Request, *, allow_json: bool) -> dict[str, str]:
    """The request body as one flat string mapping.

    Raises:
        OAuthError: ``invalid_request`` for a body too large, malformed, or repeating a key.
    """
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise OAuthError("invalid_request", "Request body is too large", 413)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        if not allow_json:
            raise OAuthError("invalid_request", "Use application/x-www-form-urlencoded")
        try:
            raw = json.loads(body or b"{}")
        except ValueError:
            raise OAuthError("invalid_request", "Body is not valid JSON") from None
        if not isinstance(raw, dict):
            raise OAuthError("invalid_request", "Body must be a JSON object")
        return {
            str(k): v if isinstance(v, str) else json.dumps(v)
            for k, v in raw.items()
            if v is not None
        }
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "Body is not UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            # RFC 6749 §3.1: parameters must not be included more than once
            raise OAuthError("invalid_request", f"Parameter {key} is repeated")
        params[key] = value
    return params


@final
class AuthApi:
    """Endpoints of the Authentication API bound to one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self._t = tenant

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/bc-authorize", self.bc_authorize, methods=["POST"]),
            Route("/oauth/token", self.token, methods=["POST"]),
            Route("/oauth/revoke", self.revoke, methods=["POST"]),
            Route("/userinfo", self.userinfo, methods=["GET"]),
        ]

    async def discovery(self, request: Request) -> Response:
        self._t.stats.discovery += 1
        iss = self._t.issuer
        return JSONResponse(
            {
                "issuer": iss,
                "token_endpoint": iss + "oauth/token",
                "userinfo_endpoint": iss + "userinfo",
                "revocation_endpoint": iss + "oauth/revoke",
                "jwks_uri": iss + ".well-known/jwks.json",
                "backchannel_authentication_endpoint": iss + "bc-authorize",
                "backchannel_token_delivery_modes_supported": ["poll"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "private_key_jwt",
                ],
                "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
                "grant_types_supported": [
                    CIBA_GRANT,
                    VAULT_GRANT,
                    "client_credentials",
                ],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "claims_supported": ["aud", "auth_time", "email", "exp", "iat", "iss", "sub"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        self._t.stats.jwks += 1
        return JSONResponse(self._t.keys.jwks(self._t.mono()))

    def _authenticate(self, request: Request, params: Mapping[str, str]) -> Client:
        try:
            return self._t.clients.authenticate(
                params, request.headers.get("authorization"), now=self._t.wall()
            )
        except ClientAuthError as exc:
            raise OAuthError.of(exc) from None

    async def bc_authorize(self, request: Request) -> Response:
        t = self._t
        t.stats.bc_authorize += 1
        try:
            params = await read_params(request, allow_json=False)
            client = self._authenticate(request, params)
            if client.kind != "app":
                raise OAuthError(
                    "unauthorized_client",
                    f"Grant type '{CIBA_GRANT}' not allowed for the client.",
                    403,
                )
            try:
                ciba_request = t.ciba.start(
                    params,
                    client_id=client.client_id,
                    known_users=frozenset(u.user_id for u in t.users),
                    audiences=frozenset([t.options.api_audience]),
                    mono=t.mono(),
                    wall=t.wall(),
                )
            except CibaError as exc:
                if "x-ratelimit-reset" in exc.headers:
                    # Auth0 sends the reset as epoch seconds
                    reset = int(t.wall()) + int(exc.headers["x-ratelimit-reset"])
                    exc.headers["x-ratelimit-reset"] = str(reset)
                raise OAuthError.of(exc) from None
        except OAuthError as exc:
            return exc.response()
        t.stats.bc_authorize_ok += 1
        if t.on_started is not None:
            t.on_started(ciba_request)
        return JSONResponse(t.ciba.start_answer(ciba_request), headers=_NO_STORE)

    async def token(self, request: Request) -> Response:
        try:
            params = await read_params(request, allow_json=True)
            grant_type = params.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "Missing required parameter: grant_type")
            client = self._authenticate(request, params)
            if grant_type == CIBA_GRANT:
                answer = self._ciba(client, params)
            elif grant_type == VAULT_GRANT:
                answer = await self._vault(client, params)
            elif grant_type == "client_credentials":
                answer = self._client_credentials(client, params)
            else:
                raise OAuthError("unsupported_grant_type", f"Unsupported grant type: {grant_type}")
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(answer, headers=_NO_STORE)

    def _ciba(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        t = self._t
        if client.kind != "app":
            raise OAuthError(
                "unauthorized_client", f"Grant type '{CIBA_GRANT}' not allowed for the client.", 403
            )
        auth_req_id = params.get("auth_req_id")
        if not auth_req_id:
            raise OAuthError("invalid_request", "Missing required parameter: auth_req_id")
        t.stats.polls[auth_req_id] += 1
        try:
            approved = t.ciba.poll(auth_req_id, client_id=client.client_id, mono=t.mono())
        except CibaError as exc:
            if exc.error == "slow_down":
                t.stats.slow_downs += 1
            raise OAuthError.of(exc) from None
        answer = t.tokens.ciba_tokens(approved, wall=t.wall())
        t.ciba.mark_issued(approved)
        t.stats.ciba_tokens += 1
        return answer

    def _subject_user(self, client: Client, params: Mapping[str, str]) -> str:
        """The user behind the exchange's subject token, or a 401 refusal."""
        t = self._t
        token_type = params.get("subject_token_type")
        token = params.get("subject_token")
        if not token:
            raise OAuthError("invalid_request", "Missing required parameter: subject_token")
        if token_type == SUBJECT_REFRESH_TOKEN:
            grant = t.tokens.refresh_grant(token)
            if grant is None or grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "Invalid refresh token", 401)
            return grant.user_id
        if token_type != SUBJECT_ACCESS_TOKEN:
            raise OAuthError("invalid_request", "Unsupported subject_token_type")
        if t.tokens.is_opaque(token):
            if t.options.vault_refuses_opaque or client.kind != "app":
                raise OAuthError(
                    "invalid_grant",
                    "The subject token is not a JWT access token for an API linked to this client",
                    401,
                )
            opaque = t.tokens.opaque_grant(token, wall=t.wall())
            if opaque is None:
                raise OAuthError("invalid_grant", "Subject token is expired", 401)
            return opaque.user_id
        try:
            claims = t.tokens.verify(
                token, mono=t.mono(), wall=t.wall(), audience=t.options.api_audience
            )
        except jwt.InvalidTokenError:
            raise OAuthError("invalid_grant", "Invalid subject token", 401) from None
        if client.kind != "resource_server":
            # reference §11: the exchanging client must be the Custom API Client linked to
            # the API named by the token's audience
            raise OAuthError(
                "unauthorized_client",
                "The client is not the Custom API Client of the subject token's audience",
                403,
            )
        return str(claims["sub"])

    async def _vault(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        t = self._t
        t.stats.token_vault_exchanges += 1
        asked = params.get("scope", "").split()
        if asked:
            t.stats.vault_scope_params += 1
        try:
            if not t.options.vault_enabled or client.kind == "mgmt":
                raise OAuthError(
                    "unauthorized_client",
                    f"Grant type '{VAULT_GRANT}' not allowed for the client.",
                    403,
                )
            if params.get("requested_token_type") != FEDERATED_TOKEN_TYPE:
                raise OAuthError(
                    "invalid_request", f"requested_token_type must be {FEDERATED_TOKEN_TYPE}"
                )
            connection = params.get("connection")
            if not connection:
                raise OAuthError("invalid_request", "Missing required parameter: connection")
            user_id = self._subject_user(client, params)
            account = t.users.find_account(user_id, connection, params.get("login_hint"))
            if account is None:
                raise OAuthError(
                    "federated_connection_refresh_token_not_found",
                    "Federated connection Refresh Token not found.",
                    401,
                )
        except OAuthError:
            t.stats.token_vault_refused += 1
            raise
        wall = t.wall()
        if t.users.fresh_token(user_id, account, now=wall, ttl=t.options.provider_token_ttl):
            await t.persist_users()
        t.stats.token_vault_ok += 1
        answer: dict[str, Any] = {
            "access_token": account.access_token,
            "expires_in": max(1, int(account.expires_at - wall)),
            "issued_token_type": FEDERATED_TOKEN_TYPE,
            "token_type": "Bearer",
        }
        # Early Access scope (reference §11): the token is narrowed to the asked scopes that
        # were granted, and scope is returned when that differs from the ask (or none asked).
        issued = [s for s in asked if s in account.scopes] if asked else list(account.scopes)
        if not t.options.vault_omits_scope and (not asked or issued != asked):
            answer["scope"] = " ".join(issued)
        return answer

    def _client_credentials(self, client: Client, params: Mapping[str, str]) -> dict[str, Any]:
        t = self._t
        audience = params.get("audience")
        if not audience:
            raise OAuthError(
                "access_denied",
                "No audience parameter was provided, and no default audience has been configured",
                403,
            )
        if audience not in (t.mgmt_audience, t.options.api_audience):
            raise OAuthError("access_denied", f"Service not found: {audience}", 403)
        if client.kind != "mgmt" or audience != t.mgmt_audience:
            raise OAuthError(
                "access_denied",
                f'Client is not authorized to access "{audience}". You need to create a '
                "client-grant associated to this API.",
                403,
            )
        t.stats.client_credentials += 1
        return t.tokens.mgmt_token(client.client_id, list(t.options.mgmt_scopes), wall=t.wall())

    async def revoke(self, request: Request) -> Response:
        """``/oauth/revoke``: revoke a refresh token of the authenticated client.

        200 with an empty body, also for a token that is unknown or already revoked (RFC 7009
        §2.2); a refresh token of another client is left alone.
        """
        t = self._t
        try:
            params = await read_params(request, allow_json=True)
            client = self._authenticate(request, params)
            token = params.get("token")
            if not token:
                raise OAuthError("invalid_request", "Missing required parameter: token")
        except OAuthError as exc:
            return exc.response()
        if t.tokens.revoke_refresh(token, client_id=client.client_id):
            t.stats.revocations += 1
        return Response(status_code=200, headers=_NO_STORE)

    async def userinfo(self, request: Request) -> Response:
        """``/userinfo`` for opaque CIBA access tokens (their only audience)."""
        t = self._t
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        grant = t.tokens.opaque_grant(token, wall=t.wall()) if token else None
        if grant is None:
            return Response("Unauthorized", status_code=401, media_type="text/plain")
        user = t.users.get(grant.user_id)
        body: dict[str, Any] = {"sub": grant.user_id}
        if user is not None and "email" in grant.scope:
            body["email"] = user.email
        return JSONResponse(body)

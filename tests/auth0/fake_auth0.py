"""A scripted fake Auth0 tenant behind ``httpx.MockTransport``, faithful to the reference.

It implements what aegisd talks to (``reference/auth0-protocol.md``): discovery and JWKS (§6),
``/bc-authorize`` (§1, with client authentication, iss_sub ``login_hint``, ``openid`` scope,
binding-message alphabet, ``requested_expiry`` ≤ 300), CIBA polling at ``/oauth/token`` (§2:
``authorization_pending``, ``slow_down`` with ``Retry-After`` and body ``interval`` when a
client polls early, ``access_denied`` for denial *and* expiry, single-use ``auth_req_id``),
Token Vault exchange (§3: no ``scope`` accepted, opaque access tokens refused with 401), the
Management API ``client_credentials`` grant and get-user with ``identities[]`` (§4).

Time: ``trio.current_time()`` for scheduling, ``WALL0 + trio.current_time()`` as the wall
clock (tests give the client the same ``now``). Faults are queued per path with
``fail_next``. Every request is recorded with its time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

import httpx
import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

WALL0 = 1_800_000_000.0
DOMAIN = "tenant.example.eu.auth0.com"
ISSUER = f"https://{DOMAIN}/"
USER_ID = "auth0|approver-1"
APP_ID = "app-client-id"
APP_SECRET = "APP-SECRET-4b1f9c2e7d"
MGMT_ID = "mgmt-client-id"
MGMT_SECRET = "MGMT-SECRET-93ad0e11"
API_ID = "custom-api-client-id"  # the Custom API Client linked to AUDIENCE (reference §11)
API_SECRET = "API-SECRET-5c2d77aa01"
AUDIENCE = "https://aegis.example/api"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
TV_GRANT = "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
TV_REQUESTED = "http://auth0.com/oauth/token-type/federated-connection-access-token"
SUBJECT_AT = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_RT = "urn:ietf:params:oauth:token-type:refresh_token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_BINDING = re.compile(r"[A-Za-z0-9 +\-_.,:#]{1,64}")

Fault = httpx.Response | Exception | Callable[[httpx.Request], Awaitable[httpx.Response]]


def wall() -> float:
    return WALL0 + trio.current_time()


def new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, object], claims: dict[str, object]) -> str:
    """``alg: none`` style token with an empty signature."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hs256_token(header: dict[str, object], claims: dict[str, object], secret: bytes) -> str:
    """HS256 token built by hand (PyJWT refuses to use a public key as an HMAC secret)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def oauth_error(status: int, error: str, description: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": error, "error_description": description}, headers=headers
    )


@dataclass
class CibaRequest:
    auth_req_id: str
    created: float
    expires_in: int
    interval: float
    scope: str
    binding_message: str
    audience: str | None
    details: str | None = None
    decision: Literal["approve", "deny"] | None = None
    decided_at: float | None = None
    last_poll: float | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    polls: list[float] = field(default_factory=list)
    used: bool = False


@dataclass
class Recorded:
    at: float
    method: str
    path: str
    form: dict[str, str]
    headers: httpx.Headers
    query: dict[str, str]
    raw_path: str


class FakeAuth0:
    """A scripted Auth0 tenant. Build one per test; pass ``transport`` to ``httpx.AsyncClient``.

    Knobs (attributes) a test may set:
        interval: the ``interval`` announced by ``/bc-authorize`` (``None`` omits it).
        auto_decision / auto_after: decide every new request this many seconds after start.
        poll_latency: seconds each poll takes to answer (to observe overlap).
        slow_down_enforced: answer ``slow_down`` to early polls.
        client_auth: the application's registered authentication method.
        vault_omit_scope, identity_has_token, identity_numeric_id: Token Vault / Management.
        id_token_factory: replaces ID-token minting (forgery tests).
    """

    def __init__(self, *, key: RSAPrivateKey, client_key: RSAPrivateKey | None = None) -> None:
        self.keys: list[tuple[str, RSAPrivateKey]] = [("kid-1", key)]
        self.client_key = client_key
        self.interval: float | None = 5
        self.auto_decision: Literal["approve", "deny"] | None = None
        self.auto_after = 0.0
        self.poll_latency = 0.0
        self.slow_down_enforced = True
        self.slow_down_body_interval = True
        self.client_auth: str = "client_secret_post"
        self.vault_omit_scope = False
        self.vault_refuses = False
        self.vault_granted = "repo read:user"  # what the person granted when connecting
        self.revoke_status = 200
        self.revoked: list[str] = []
        self.custom_domain: str | None = None  # a host that also serves this tenant
        self.issuer_override: str | None = None  # the issuer as seen through custom_domain
        self.grant_filter: set[str] = set()  # scopes RBAC leaves out of CIBA tokens
        self.email_channel = False  # the application enables async_approval email
        self.rar_omits_id_token = False  # Auth0's RAR token-response sample has no id_token
        self.identity_has_token = True
        self.identity_numeric_id = True
        self.mgmt_token_ttl = 86400
        self.mgmt_scope = "read:users read:user_idp_tokens"
        self.mgmt_latency = 0.0
        self.mgmt_audience = f"{ISSUER}api/v2/"  # the canonical domain, always
        self.id_token_factory: Callable[[dict[str, object]], str] | None = None
        self.discovery_overrides: dict[str, object] = {}
        self.requests: dict[str, CibaRequest] = {}
        self.recorded: list[Recorded] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.refresh_tokens: set[str] = set()
        self.mgmt_tokens: set[str] = set()
        self.counts: dict[str, int] = defaultdict(int)
        self.seen_jti: set[str] = set()
        self.transport = httpx.MockTransport(self.handle)

    @property
    def issuer(self) -> str:
        return self.issuer_override or ISSUER

    # ---- control ------------------------------------------------------------------------

    def fail_next(self, path: str, *faults: Fault) -> None:
        """Answer the next requests to ``path`` with these faults, in order."""
        self.faults[path].extend(faults)

    def decide(self, auth_req_id: str, decision: Literal["approve", "deny"]) -> None:
        req = self.requests[auth_req_id]
        req.decision, req.decided_at = decision, trio.current_time()

    def rotate_key(self, *, keep_old: bool = False) -> RSAPrivateKey:
        key = new_key()
        kid = f"kid-{len(self.keys) + 1}"
        self.keys = ([*self.keys] if keep_old else []) + [(kid, key)]
        return key

    def only_request(self) -> CibaRequest:
        assert len(self.requests) == 1
        return next(iter(self.requests.values()))

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.recorded if r.path == path]

    # ---- tokens -------------------------------------------------------------------------

    def sign(
        self,
        claims: dict[str, object],
        *,
        kid: str | None = None,
        key: RSAPrivateKey | None = None,
        alg: str = "RS256",
    ) -> str:
        kid_, key_ = self.keys[-1]
        return jwt.encode(claims, key or key_, algorithm=alg, headers={"kid": kid or kid_})

    def id_claims(self, **over: object) -> dict[str, object]:
        now = int(wall())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": APP_ID,
            "sub": USER_ID,
            "iat": now,
            "exp": now + 36000,
        }
        claims.update(over)
        return claims

    def jwks(self) -> dict[str, object]:
        keys = []
        for kid, key in self.keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
            keys.append(jwk)
        return {"keys": keys}

    def discovery(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}authorize",
            "token_endpoint": f"{self.issuer}oauth/token",
            "userinfo_endpoint": f"{self.issuer}userinfo",
            "jwks_uri": f"{self.issuer}.well-known/jwks.json",
            "backchannel_authentication_endpoint": f"{self.issuer}bc-authorize",
            "backchannel_token_delivery_modes_supported": ["poll"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
            "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
        }
        doc.update(self.discovery_overrides)
        return {k: v for k, v in doc.items() if v is not None}

    # ---- HTTP ---------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        form: dict[str, str] = {}
        if request.method == "POST":
            body = request.content.decode()
            ctype = request.headers.get("content-type", "")
            # an empty form (client_secret_basic with no other field) has no content type
            assert not body or ctype.startswith("application/x-www-form-urlencoded"), ctype
            form = dict(parse_qsl(body, keep_blank_values=True))
        raw_path = request.url.raw_path.decode().split("?")[0]
        self.recorded.append(
            Recorded(
                trio.current_time(),
                request.method,
                unquote(path),
                form,
                request.headers,
                dict(request.url.params),
                raw_path,
            )
        )
        self.counts[path] += 1
        if self.faults.get(path):
            fault = self.faults[path].popleft()
            if isinstance(fault, Exception):
                raise fault
            if isinstance(fault, httpx.Response):
                return fault
            return await fault(request)
        assert request.url.host in (DOMAIN, self.custom_domain)
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery())
        if path == "/.well-known/jwks.json":
            return httpx.Response(200, json=self.jwks())
        if path == "/bc-authorize":
            return self._bc_authorize(request, form)
        if path == "/oauth/token":
            return await self._token(request, form)
        if path == "/oauth/revoke":
            return self._revoke(request, form)
        if path.startswith("/api/v2/users/"):
            return await self._get_user(request, raw_path)
        return httpx.Response(404, json={"error": "not_found"})

    def _client(self, request: httpx.Request, form: dict[str, str]) -> str | None:
        """Authenticate the client (reference §1 table); ``None`` when it fails."""
        secrets_ = {APP_ID: APP_SECRET, MGMT_ID: MGMT_SECRET, API_ID: API_SECRET}
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
            cid, sec = unquote(cid), unquote(sec)
            assert "client_secret" not in form, "secret must not be in the body with basic"
            assert "client_id" not in form, "basic: the id travels in the header only"
            return cid if secrets_.get(cid) == sec else None
        if "client_assertion" in form:
            assert form["client_assertion_type"] == ASSERTION_TYPE
            assert self.client_key is not None
            header = jwt.get_unverified_header(form["client_assertion"])
            assert header["alg"] in ("RS256", "PS256")
            try:
                claims = jwt.decode(
                    form["client_assertion"],
                    public_pem(self.client_key),
                    algorithms=["RS256", "PS256"],
                    audience=self.issuer,
                    options={"verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError:
                return None
            assert claims["iss"] == claims["sub"] == form["client_id"]
            assert 0 < claims["exp"] - wall() <= 300
            assert len(claims["jti"]) <= 64
            assert claims["jti"] not in self.seen_jti, "jti reused"
            self.seen_jti.add(claims["jti"])
            return str(claims["iss"])
        cid = form.get("client_id", "")
        return cid if secrets_.get(cid) == form.get("client_secret") else None

    def _bc_authorize(self, request: httpx.Request, form: dict[str, str]) -> httpx.Response:
        if self._client(request, form) != APP_ID:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if "openid" not in form.get("scope", "").split():
            return oauth_error(400, "invalid_request", "openid scope must be requested")
        hint = json.loads(form["login_hint"])
        assert hint == {"format": "iss_sub", "iss": self.issuer, "sub": hint["sub"]}
        if hint["sub"] != USER_ID:
            return oauth_error(400, "unknown_user_id", "User ID is malformed or unknown")
        assert _BINDING.fullmatch(form["binding_message"]), form["binding_message"]
        expiry = int(form.get("requested_expiry", "300"))
        # 301..259200 selects the email channel, when the application enables it (§11)
        assert 1 <= expiry <= (259200 if self.email_channel else 300)
        req = CibaRequest(
            auth_req_id=secrets.token_urlsafe(48),
            created=trio.current_time(),
            expires_in=expiry,
            interval=self.interval or 5,
            scope=form["scope"],
            binding_message=form["binding_message"],
            audience=form.get("audience"),
            details=form.get("authorization_details"),
        )
        if self.auto_decision:
            req.decision = self.auto_decision
            req.decided_at = req.created + self.auto_after
        self.requests[req.auth_req_id] = req
        body: dict[str, object] = {"auth_req_id": req.auth_req_id, "expires_in": expiry}
        if self.interval is not None:
            body["interval"] = self.interval
        return httpx.Response(200, json=body)

    async def _token(self, request: httpx.Request, form: dict[str, str]) -> httpx.Response:
        client = self._client(request, form)
        if client is None:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        grant = form.get("grant_type")
        if grant == CIBA_GRANT:
            return await self._poll(form)
        if grant == TV_GRANT:
            return self._exchange(form, client)
        if grant == "client_credentials":
            if self.mgmt_latency:
                await trio.sleep(self.mgmt_latency)
            assert client == MGMT_ID
            assert form["audience"] == self.mgmt_audience
            token = "mgmt-" + secrets.token_urlsafe(16)
            self.mgmt_tokens.add(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "expires_in": self.mgmt_token_ttl,
                    "scope": self.mgmt_scope,
                    "token_type": "Bearer",
                },
            )
        return oauth_error(400, "unsupported_grant_type")

    async def _poll(self, form: dict[str, str]) -> httpx.Response:
        req = self.requests.get(form["auth_req_id"])
        if req is None or req.used:
            return oauth_error(400, "invalid_grant", "Invalid or expired auth_req_id")
        now = trio.current_time()
        req.polls.append(now)
        req.in_flight += 1
        req.max_in_flight = max(req.max_in_flight, req.in_flight)
        try:
            if self.poll_latency:
                await trio.sleep(self.poll_latency)
            early = req.last_poll is not None and now - req.last_poll < req.interval - 0.01
            req.last_poll = now
            if early and self.slow_down_enforced:
                req.interval += 5  # persistent over-polling makes the wait grow
                body: dict[str, object] = {
                    "error": "slow_down",
                    "error_description": "You are polling faster than allowed. Try again in "
                    f"{req.interval:.0f} seconds.",
                }
                if self.slow_down_body_interval:
                    body["interval"] = req.interval
                return httpx.Response(
                    400, json=body, headers={"Retry-After": str(int(req.interval))}
                )
            now = trio.current_time()
            expired = now >= req.created + req.expires_in
            decided = req.decided_at is not None and now >= req.decided_at
            if decided and req.decision == "approve" and not expired:
                req.used = True
                return httpx.Response(200, json=self._tokens(req))
            if (decided and req.decision == "deny") or expired:
                return oauth_error(
                    400,
                    "access_denied",
                    "The end-user denied the authorization request or it has been expired",
                )
            return oauth_error(
                400, "authorization_pending", "The end-user authorization is pending"
            )
        finally:
            req.in_flight -= 1

    def _granted(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s not in self.grant_filter)

    def _tokens(self, req: CibaRequest) -> dict[str, object]:
        if req.audience:
            access_token = self.sign(
                {
                    "iss": self.issuer,
                    "aud": [req.audience, f"{self.issuer}userinfo"],
                    "sub": USER_ID,
                    "azp": APP_ID,
                    "iat": int(wall()),
                    "exp": int(wall()) + 86400,
                    "scope": self._granted(req.scope),
                }
            )
        else:
            # Auth0's opaque tokens are JWE-shaped: five segments, not a JWS
            access_token = ".".join(secrets.token_urlsafe(12) for _ in range(5))
        claims = self.id_claims()
        id_token = self.id_token_factory(claims) if self.id_token_factory else self.sign(claims)
        body: dict[str, object] = {
            "access_token": access_token,
            "id_token": id_token,
            "expires_in": 86400,
            "scope": self._granted(req.scope),
            "token_type": "Bearer",
        }
        if req.details is not None:
            body["authorization_details"] = json.loads(req.details)
            if self.rar_omits_id_token:
                del body["id_token"]
        if "offline_access" in req.scope.split():
            rt = "rt-" + secrets.token_urlsafe(16)
            self.refresh_tokens.add(rt)
            body["refresh_token"] = rt
        return body

    def _revoke(self, request: httpx.Request, form: dict[str, str]) -> httpx.Response:
        """``POST /oauth/revoke``: 200 with an empty body, also for an unknown token."""
        client = self._client(request, form)
        if client is None:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if self.revoke_status != 200:
            return oauth_error(self.revoke_status, "invalid_request", "Revocation refused")
        token = form["token"]
        self.revoked.append(token)
        self.refresh_tokens.discard(token)
        return httpx.Response(200)

    def _exchange(self, form: dict[str, str], client: str) -> httpx.Response:
        assert "audience" not in form
        assert form["requested_token_type"] == TV_REQUESTED
        assert form["connection"]
        if self.vault_refuses:
            return oauth_error(403, "unauthorized_client", "Client is not allowed")
        kind, token = form["subject_token_type"], form["subject_token"]
        if kind == SUBJECT_RT:
            if token not in self.refresh_tokens or client != APP_ID:
                return oauth_error(401, "invalid_grant", "Invalid refresh token")
        elif kind == SUBJECT_AT:
            assert token.count(".") == 2, "an opaque token must never reach Token Vault"
            try:
                jwt.decode(
                    token,
                    public_pem(self.keys[-1][1]),
                    algorithms=["RS256"],
                    audience=AUDIENCE,
                    options={"verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError:
                return oauth_error(401, "invalid_grant", "Invalid subject token")
            if client != API_ID:
                # only the Custom API Client linked to the token's audience may exchange it
                return oauth_error(403, "unauthorized_client", "Client is not the API's client")
        else:
            return oauth_error(400, "invalid_request", "Unsupported subject_token_type")
        body: dict[str, object] = {
            "access_token": f"gho_{form['connection']}_" + secrets.token_urlsafe(12),
            "expires_in": 1377,
            "issued_token_type": TV_REQUESTED,
            "token_type": "Bearer",
        }
        granted = self.vault_granted.split()
        asked = form.get("scope", "").split()
        # Early Access scope (reference §11): a scope field only when it differs from the ask
        issued = [s for s in asked if s in granted] if asked else granted
        if not self.vault_omit_scope and (not asked or issued != asked):
            body["scope"] = " ".join(issued)
        return httpx.Response(200, json=body)

    async def _get_user(self, request: httpx.Request, raw_path: str) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.mgmt_tokens:
            return httpx.Response(401, json={"statusCode": 401, "error": "Unauthorized"})
        assert "|" not in raw_path, "the user id must be URL-encoded"
        user_id = unquote(raw_path.removeprefix("/api/v2/users/"))
        if user_id != USER_ID:
            return httpx.Response(404, json={"statusCode": 404, "error": "Not Found"})
        assert request.url.params.get("fields") == "identities"
        assert request.url.params.get("include_fields") == "true"
        github: dict[str, object] = {
            "provider": "github",
            "connection": "github",
            "user_id": 1234567 if self.identity_numeric_id else "1234567",
            "isSocial": True,
        }
        if self.identity_has_token:
            github["access_token"] = "gho_from_identities"
        return httpx.Response(
            200,
            json={
                "identities": [
                    {
                        "provider": "auth0",
                        "connection": "Username-Password-Authentication",
                        "user_id": "approver-1",
                        "isSocial": False,
                    },
                    github,
                ]
            },
        )

"""Getting a connection's provider token after an approval: Token Vault, then the fallback.

Owns the Token Vault exchange (``reference/auth0-protocol.md`` §3) and the Management API
fallback (§4):

* Token Vault: ``grant_type`` federated-connection-access-token at the token endpoint, with
  the approval's refresh token (``subject_token_type`` refresh_token) when there is one, and
  with the CIBA access token (``subject_token_type`` access_token) only when it is a JWT
  (``auth0.audience``) and only from the Custom API Client (``[auth0.token_vault]``); never
  an opaque token. ``requested_token_type`` federated-connection-access-token,
  ``connection``, optional ``login_hint``, and the action's ``credential.scopes`` as the
  (Early Access) ``scope`` parameter, whose answer is checked as auth0-ai does (an answer
  without ``scope`` carries what was granted, reference §11). 4xx answers (401, 403 and the
  known codes) are a typed refusal, with a sentence
  saying what to fix.
* Fallback: a ``client_credentials`` token for the Management API (cached until shortly
  before it expires, one fetch shared by concurrent callers), then
  ``GET /api/v2/users/{id}?fields=identities&include_fields=true`` and the access token of
  the identity for the connection. Connections with Token Vault enabled no longer store
  tokens there; that case gets its own clear explanation.

It must not choose between the two (``client.py`` follows the action's ``order``), cache a
provider token (each one is delivered once), or put a token or foreign text in a message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, final
from urllib.parse import quote

import trio

from aegisd.auth0.http import Auth0Http, ClientIdentity
from aegisd.auth0.singleflight import SingleFlight
from aegisd.auth0.tokens import Approval, Credential
from aegisd.errors import CredentialUnavailable, UpstreamError

__all__ = [
    "REQUESTED_TOKEN_TYPE",
    "SUBJECT_ACCESS_TOKEN",
    "SUBJECT_REFRESH_TOKEN",
    "TOKEN_EXCHANGE_GRANT",
    "InsufficientScope",
    "ManagementFallback",
    "TokenVault",
    "TokenVaultRefused",
    "looks_like_jwt",
]

log = logging.getLogger(__name__)

TOKEN_EXCHANGE_GRANT: Final = (
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
)
SUBJECT_ACCESS_TOKEN: Final = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_REFRESH_TOKEN: Final = "urn:ietf:params:oauth:token-type:refresh_token"
REQUESTED_TOKEN_TYPE: Final = "http://auth0.com/oauth/token-type/federated-connection-access-token"

_MIN_MARGIN: Final = 30.0
_MAX_MARGIN: Final = 300.0
_DEFAULT_MGMT_LIFETIME: Final = 86400.0  # reference §4: the default expires_in

# Known Token Vault refusals (reference §3) and what the operator should do about them.
_REFUSAL_HINTS: Final = {
    "federated_connection_refresh_token_not_found": (
        "the approver has not connected this account to Token Vault (Connected Accounts)"
    ),
    "tokenset_not_found": (
        "the approver has not connected this account to Token Vault (Connected Accounts)"
    ),
    "federated_connection_refresh_token_flow_failed": (
        "the provider refused to refresh the stored token; the approver must reconnect the account"
    ),
    "invalid_grant": "Auth0 did not accept the subject token",
    "unauthorized_client": (
        "the application may not use Token Vault (enable the token-exchange grant type)"
    ),
    "invalid_client": "client authentication failed (check the client id and secret)",
    "access_denied": "Auth0 denied the exchange",
}


class TokenVaultRefused(CredentialUnavailable):
    """Token Vault said no (4xx), or had nothing to exchange. Callers may fall back."""

    default_message = "Token Vault refused the exchange"


class InsufficientScope(CredentialUnavailable):
    """A credential came without a scope the action needs. Final: no fallback is tried (it
    could only hand out a token whose scopes nobody checked)."""

    default_message = "the credential lacks a scope the action needs"


@dataclass(frozen=True)
class _Subject:
    token_type: str
    token: str = field(repr=False)
    label: str = ""
    identity: ClientIdentity | None = None


def looks_like_jwt(token: str) -> bool:
    """Whether a token has the three-part JWS shape (Auth0's opaque tokens do not)."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _refusal(status: int, error: str | None, subject: str) -> str:
    hint = _REFUSAL_HINTS.get(error or "")
    if hint is None and status == 403:
        hint = (
            "this client is not permitted to exchange (for access tokens it must be the "
            "API's Custom API Client)"
        )
    if hint is None and status == 401:
        hint = "the subject token was not accepted, or no connected account matches the connection"
    code = f" {error}" if error else ""
    return f"{subject} exchange: HTTP {status}{code}: {hint or 'refused'}"


@final
class TokenVault:
    """Token Vault exchanges for one tenant.

    Args:
        http: the Auth0 seam.
        identity: the application: it exchanges its own refresh tokens.
        api_client: the Custom API Client of ``auth0.audience``, which Auth0 requires for the
            access-token exchange (reference §11); without it only refresh tokens are used.
    """

    def __init__(
        self, http: Auth0Http, identity: ClientIdentity, api_client: ClientIdentity | None = None
    ) -> None:
        self._http = http
        self._identity = identity
        self._api_client = api_client
        self._refusals = 0
        self._successes = 0

    def _subjects(self, approval: Approval) -> tuple[list[_Subject], list[str]]:
        """The exchanges to try, in order, and why others are not tried.

        The refresh token first (the application exchanges its own; Token Vault needs
        rotation off); then the CIBA access token, only when it is a JWT (``auth0.audience``
        set) and only from the API's Custom API Client (``[auth0.token_vault]``): Auth0
        checks that the exchanging client is the one linked to the token's audience
        (reference §11). An opaque CIBA token has ``/userinfo`` as its audience: no Custom
        API Client can be linked to it, so it is never sent to Token Vault.
        """
        subjects: list[_Subject] = []
        skipped: list[str] = []
        if approval.refresh_token:
            subjects.append(
                _Subject(
                    SUBJECT_REFRESH_TOKEN, approval.refresh_token, "refresh-token", self._identity
                )
            )
        if not looks_like_jwt(approval.access_token):
            skipped.append(
                "access-token exchange not tried: the CIBA access token is opaque (set "
                "auth0.audience to get a JWT)"
            )
        elif self._api_client is None:
            skipped.append(
                "access-token exchange not tried: it needs [auth0.token_vault], the Custom API "
                "Client linked to auth0.audience"
            )
        else:
            subjects.append(
                _Subject(
                    SUBJECT_ACCESS_TOKEN, approval.access_token, "access-token", self._api_client
                )
            )
        return subjects, skipped

    async def exchange(
        self,
        approval: Approval,
        *,
        connection: str,
        login_hint: str | None,
        kind: str,
        scopes: Sequence[str] = (),
    ) -> Credential:
        """Exchange the approval's tokens for ``connection``'s provider token.

        Args:
            scopes: provider scopes the action needs: sent as Token Vault's (Early Access)
                ``scope`` parameter, and checked against the answer's ``scope``.

        Raises:
            TokenVaultRefused: every possible exchange was refused, or none was possible.
            InsufficientScope: the provider token lacks a scope the action needs.
            UpstreamError: Auth0 unreachable or its answer unusable.
            RateLimited: Auth0's rate limit could not be waited out.
        """
        subjects, reasons = self._subjects(approval)
        for subject in subjects:
            try:
                return await self._exchange_one(subject, connection, login_hint, kind, scopes)
            except TokenVaultRefused as exc:
                reasons.append(exc.message)
        self._refusals += 1
        raise TokenVaultRefused("Token Vault: " + "; ".join(reasons))

    async def _exchange_one(
        self,
        subject: _Subject,
        connection: str,
        login_hint: str | None,
        kind: str,
        scopes: Sequence[str],
    ) -> Credential:
        endpoints = await self._http.endpoints()
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token_type": subject.token_type,
            "subject_token": subject.token,
            "requested_token_type": REQUESTED_TOKEN_TYPE,
            "connection": connection,
        }
        if login_hint:
            form["login_hint"] = login_hint
        if scopes:
            form["scope"] = " ".join(scopes)
        reply = await self._http.send(
            "POST",
            endpoints.token,
            what="Token Vault exchange",
            retry="idempotent",
            form=form,
            identity=subject.identity,
        )
        if reply.status == 200:
            token = reply.body.get("access_token")
            if not isinstance(token, str) or not token:
                raise UpstreamError("Token Vault answer lacks access_token")
            token_type = reply.body.get("token_type")
            scope = reply.body.get("scope")
            granted = scope if isinstance(scope, str) else ""
            # Absent means "as granted" (reference §11: a scope field is returned when the
            # answer's scopes differ); present, it must hold every scope the action needs.
            missing = [s for s in scopes if granted and s not in granted.split()]
            if missing:
                raise InsufficientScope(
                    f"Token Vault's {connection!r} token lacks the scopes {' '.join(missing)}: "
                    "the approver must reconnect the account granting them"
                )
            expires_in = _number(reply.body.get("expires_in"))
            self._successes += 1
            log.info("Token Vault %s exchange ok for connection %s", subject.label, connection)
            return Credential(
                access_token=token,
                token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
                expires_at=self._http.now() + expires_in if expires_in is not None else None,
                scope=granted or " ".join(scopes),
                kind=kind,
                connection=connection,
                path="token_vault",
            )
        if 400 <= reply.status < 500:
            if reply.error == "invalid_client":
                self._http.forget_secrets()
            reason = _refusal(reply.status, reply.error, subject.label)
            log.info("Token Vault refused: %s", reason)
            raise TokenVaultRefused(reason)
        raise UpstreamError(f"Token Vault answered HTTP {reply.status}")

    def state(self) -> dict[str, object]:
        return {"token_vault_successes": self._successes, "token_vault_refusals": self._refusals}


@dataclass(frozen=True)
class _MgmtToken:
    value: str
    scope: str | None
    refresh_at: float  # trio clock


@final
class ManagementFallback:
    """Provider tokens from the user's ``identities[]`` via the Management API.

    Args:
        http: the Auth0 seam.
        identity: the management (machine-to-machine) client, or ``None`` when not
            configured (every call then raises a clear ``CredentialUnavailable``).
        audience: the Management API identifier (``https://{domain}/api/v2/``).
    """

    def __init__(self, http: Auth0Http, identity: ClientIdentity | None, *, audience: str) -> None:
        self._http = http
        self._identity = identity
        self._audience = audience
        self._token: _MgmtToken | None = None
        self._flight: SingleFlight[_MgmtToken] = SingleFlight()
        self._fetches = 0

    @property
    def configured(self) -> bool:
        return self._identity is not None

    async def _management_token(self) -> _MgmtToken:
        """The cached token, or one fresh fetch shared by everyone waiting for it."""
        return await self._flight.run(self._cached_token, self._fetch_token)

    def _cached_token(self) -> _MgmtToken | None:
        token = self._token
        if token is not None and trio.current_time() < token.refresh_at:
            return token
        return None

    async def _fetch_token(self) -> _MgmtToken:
        assert self._identity is not None
        endpoints = await self._http.endpoints()
        reply = await self._http.send(
            "POST",
            endpoints.token,
            what="Management API token",
            retry="idempotent",
            form={"grant_type": "client_credentials", "audience": self._audience},
            identity=self._identity,
        )
        self._fetches += 1
        if reply.status != 200:
            if reply.error == "invalid_client":
                self._http.forget_secrets()
            code = f" ({reply.error})" if reply.error else ""
            raise CredentialUnavailable(
                f"the management client could not get a Management API token: HTTP "
                f"{reply.status}{code}; check auth0.management.client_id, its secret and its "
                "client grant for the Management API"
            )
        value = reply.body.get("access_token")
        if not isinstance(value, str) or not value:
            raise UpstreamError("Management API token answer lacks access_token")
        lifetime = _number(reply.body.get("expires_in")) or _DEFAULT_MGMT_LIFETIME
        margin = max(_MIN_MARGIN, min(_MAX_MARGIN, lifetime * 0.1))
        scope = reply.body.get("scope")
        log.info("Management API token fetched (valid %.0f s)", lifetime)
        self._token = _MgmtToken(
            value=value,
            scope=scope if isinstance(scope, str) else None,
            refresh_at=trio.current_time() + max(0.0, lifetime - margin),
        )
        return self._token

    async def provider_token(
        self, user_id: str, *, connection: str, login_hint: str | None, kind: str
    ) -> Credential:
        """The access token stored on ``user_id``'s identity for ``connection``.

        Raises:
            CredentialUnavailable: not configured, not authorised, no such identity, or the
                identity carries no token (the message says which and why).
            UpstreamError: Auth0 unreachable or its answer unusable.
            RateLimited: the Management API rate limit could not be waited out.
        """
        if self._identity is None:
            raise CredentialUnavailable(
                "no Management API fallback: [auth0.management] is not configured"
            )
        url = self._http.management_base + "users/" + quote(user_id, safe="")
        for attempt in (1, 2):
            token = await self._management_token()
            reply = await self._http.send(
                "GET",
                url,
                what="Management API get user",
                retry="idempotent",
                params={"fields": "identities", "include_fields": "true"},
                headers={"Authorization": f"Bearer {token.value}"},
            )
            if reply.status == 401 and attempt == 1:
                # the cached token was rejected (revoked, or expired early): fetch once more
                self._token = None
                continue
            break
        if reply.status in (401, 403):
            raise CredentialUnavailable(
                f"the Management API refused the lookup (HTTP {reply.status}); the management "
                "client needs the scopes read:users and read:user_idp_tokens"
            )
        if reply.status == 404:
            raise CredentialUnavailable("the Management API does not know the approver's user")
        if reply.status != 200:
            raise UpstreamError(f"Management API get user answered HTTP {reply.status}")
        identities = reply.body.get("identities")
        if not isinstance(identities, list):
            raise UpstreamError("Management API answer lacks identities")
        chosen = _pick_identity(identities, connection, login_hint)
        if chosen is None:
            which = f" with user id {login_hint!r}" if login_hint else ""
            raise CredentialUnavailable(
                f"the approver has no linked identity on connection {connection!r}{which}"
            )
        access_token = chosen.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            missing_scope = token.scope is not None and "read:user_idp_tokens" not in (
                token.scope.split()
            )
            raise CredentialUnavailable(
                f"the {connection!r} identity carries no access token: "
                + (
                    "the management client lacks the read:user_idp_tokens scope"
                    if missing_scope
                    else "connections with Token Vault (Connected Accounts) enabled no longer "
                    "store provider tokens in identities[]; use Token Vault for this "
                    "connection, or sign in through it again if it is a login-only connection"
                )
            )
        log.info("Management API fallback ok for connection %s", connection)
        return Credential(
            access_token=access_token,
            token_type="Bearer",
            # identities[].expires_in is stored at login, not a live countdown (reference §4)
            expires_at=None,
            scope="",
            kind=kind,
            connection=connection,
            path="management",
        )

    def state(self) -> dict[str, object]:
        return {
            "management_configured": self.configured,
            "management_token_cached": self._token is not None,
            "management_token_fetches": self._fetches,
        }


def _normalise_user_id(value: object) -> str | None:
    """Identity ``user_id`` as text: some providers (GitHub) send a JSON number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return None


def _pick_identity(
    identities: list[object], connection: str, login_hint: str | None
) -> dict[str, object] | None:
    """The first identity on ``connection`` (matching ``login_hint`` when given).

    ``identities[0]`` is the primary identity, so with several matches the earliest wins.
    """
    for raw in identities:
        if not isinstance(raw, dict) or raw.get("connection") != connection:
            continue
        if login_hint and _normalise_user_id(raw.get("user_id")) != login_hint:
            continue
        return raw
    return None

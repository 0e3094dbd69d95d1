"""``Auth0Client``: the one object the broker uses to talk to Auth0.

Owns the wiring of the Auth0 modules (``http`` seam, ``backchannel`` CIBA driver, ``idtoken``
checks, ``vault`` exchanges) and the choice of credential path: ``ciba_token`` returns the
approval's own access token; ``token_vault`` follows the action's ``order`` (Token Vault,
then the Management API fallback by default), moving on only when a path *refuses*, and
reports why earlier paths refused (``Credential.refusals``) for the audit.

Constructing it performs no I/O (the daemon must start with Auth0 unreachable); discovery and
JWKS are fetched when first needed. It must not hold global state, log tokens, or let a
foreign exception escape: every error is an ``AegisError``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Final, final

import httpx
import trio

from aegisd.auth0.backchannel import Backchannel
from aegisd.auth0.http import Auth0Http, ClientIdentity
from aegisd.auth0.idtoken import IdTokenVerifier, JwksCache
from aegisd.auth0.issuer import management_audience
from aegisd.auth0.revoke import RefreshTokenRevoker
from aegisd.auth0.tokens import Approval, CibaStart, Credential, token_fingerprint
from aegisd.auth0.vault import InsufficientScope, ManagementFallback, TokenVault, TokenVaultRefused
from aegisd.config import (
    Auth0Config,
    CredentialSpec,
    ManagementConfig,
    TokenVaultClientConfig,
)
from aegisd.errors import CredentialUnavailable, SecretsUnavailable
from aegisd.secrets import SecretStore

__all__ = [
    "Approval",
    "Auth0Client",
    "CibaStart",
    "Credential",
    "token_fingerprint",
]

_MAX_MESSAGE: Final = 600


@final
class Auth0Client:
    """Approvals and credentials from one Auth0 tenant.

    Args:
        cfg: the ``[auth0]`` section.
        secrets: where ``auth0_client_secret``, ``management_client_secret`` and
            ``auth0_private_key`` come from.
        http: the HTTP client to use (the daemon owns its lifetime).
        now: wall clock (UNIX seconds) for expiry stamps and client assertions.

    Raises:
        ConfigError: the issuer settings are invalid (no I/O is done here).
    """

    def __init__(
        self,
        cfg: Auth0Config,
        secrets: SecretStore,
        http: httpx.AsyncClient,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._http = Auth0Http(cfg, secrets, http, now=now)
        app = ClientIdentity(
            client_id=cfg.client_id,
            method=cfg.client_auth,
            secret_name="auth0_client_secret",
            label="application",
        )
        self._jwks = JwksCache(self._http)
        verifier = IdTokenVerifier(cfg, self._jwks, self._http.issuer, now=now)
        self._backchannel = Backchannel(cfg, self._http, app, verifier, now=now)
        api_client = _identity(cfg.token_vault, "token_vault_client_secret", "Custom API Client")
        self._vault = TokenVault(self._http, app, api_client)
        mgmt = cfg.management
        mgmt_identity = _identity(mgmt, "management_client_secret", "management client")
        # The canonical tenant domain, also behind a custom domain (reference §11). Checked by
        # policy validation; resolved only when a management client is configured.
        audience = management_audience(cfg) if mgmt is not None else self._http.management_base
        self._management = ManagementFallback(self._http, mgmt_identity, audience=audience)
        self._revoker = RefreshTokenRevoker(self._http, app)

    @property
    def issuer(self) -> str:
        """The tenant's issuer URL (with trailing slash)."""
        return self._http.issuer

    async def start_approval(
        self,
        *,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None = None,
        offline_access: bool = False,
        scopes: Sequence[str] = (),
    ) -> CibaStart:
        """Send the push: one ``/bc-authorize`` request.

        Args:
            binding_message: the rendered message (``aegisd.binding``); ≤ 64 characters.
            authorization_details: RAR objects; sent only when
                ``auth0.authorization_details`` is on (their types must be registered).
            offline_access: also ask for a refresh token (for refresh-token Token Vault
                exchange); it is revoked right after that exchange.
            scopes: the action's ``credential.scopes`` for a ``ciba_token`` (added to
                ``openid`` and ``[auth0] scopes``).

        Raises:
            ApprovalUnavailable: Auth0 unreachable, misconfigured, or it refused.
            RateLimited: Auth0's rate limit; ``retry_after`` when known.
            UpstreamError: Auth0's answer was unusable.
        """
        return await self._backchannel.start(
            binding_message=binding_message,
            authorization_details=authorization_details,
            offline_access=offline_access,
            scopes=scopes,
        )

    async def wait_approval(
        self, start: CibaStart, *, on_poll: Callable[[], None] | None = None
    ) -> Approval:
        """Poll until the person answers; verify the ID token.

        Trio cancellation stops polling immediately (no further request is sent).

        Args:
            start: what ``start_approval`` returned.
            on_poll: called just before each poll is sent.

        Raises:
            ApprovalDenied: the person denied it.
            ApprovalExpired: nobody answered in time.
            ApprovalUnavailable: Auth0 ended the request otherwise.
            UpstreamError: an unusable answer, or an ID token that failed a check (no
                approval is returned then).
        """
        return await self._backchannel.wait(start, on_poll=on_poll)

    async def obtain_credential(self, spec: CredentialSpec, approval: Approval) -> Credential:
        """The credential the action's spec asks for.

        An approval's refresh token is revoked once the credential is obtained or refused
        (``Credential.refresh_token_revocation`` says how that went; a refusal's message ends
        with it), so it never outlives the one exchange it was minted for.

        Raises:
            CredentialUnavailable: no path yielded one (the message says why for each), or
                the credential lacks a scope the action needs.
            UpstreamError: Auth0 unreachable or an answer unusable.
            RateLimited: a rate limit that could not be waited out.
        """
        try:
            credential = await self._obtain(spec, approval)
        except CredentialUnavailable as exc:
            if approval.refresh_token:
                revocation = await self._revoker.revoke(approval.refresh_token)
                raise type(exc)(_short(f"{exc.message}; refresh token {revocation}")) from None
            raise
        except BaseException:
            if approval.refresh_token:
                # cancelled mid-exchange: still revoke, briefly (one call's time limit)
                with trio.CancelScope(shield=True), trio.move_on_after(self._cfg.http_timeout):
                    await self._revoker.revoke(approval.refresh_token)
            raise
        if approval.refresh_token:
            revocation = await self._revoker.revoke(approval.refresh_token)
            credential = dataclasses.replace(credential, refresh_token_revocation=revocation)
        return credential

    async def _obtain(self, spec: CredentialSpec, approval: Approval) -> Credential:
        if spec.kind == "ciba_token":
            wanted = [*self._cfg.scopes, *spec.scopes]
            missing = [s for s in wanted if s not in approval.scope.split()]
            if missing:
                # auth0-ai checks granted scopes the same way; RBAC may have filtered them
                raise InsufficientScope(
                    f"the approval's access token lacks the scopes {' '.join(missing)} (check "
                    "the API's permissions and the approver's roles)"
                )
            return Credential(
                access_token=approval.access_token,
                token_type="Bearer",
                expires_at=approval.expires_at,
                scope=approval.scope,
                kind="ciba_token",
                connection=None,
                path="ciba",
            )
        if spec.kind != "token_vault":
            raise CredentialUnavailable("this action has no credential to obtain")
        if not spec.connection:
            raise CredentialUnavailable("the action names no Token Vault connection")
        refusals: list[str] = []
        for step in spec.order:
            try:
                if step == "token_vault":
                    credential = await self._vault.exchange(
                        approval,
                        connection=spec.connection,
                        login_hint=spec.login_hint,
                        kind=spec.kind,
                        scopes=spec.scopes,
                    )
                else:
                    credential = await self._management.provider_token(
                        approval.sub,
                        connection=spec.connection,
                        login_hint=spec.login_hint,
                        kind=spec.kind,
                    )
            except InsufficientScope:
                raise
            except (TokenVaultRefused, CredentialUnavailable) as exc:
                refusals.append(exc.message if step == "token_vault" else f"fallback: {exc}")
                continue
            except SecretsUnavailable as exc:
                refusals.append(f"{step}: {exc.message}")
                continue
            return dataclasses.replace(credential, refusals=tuple(refusals))
        raise CredentialUnavailable(
            _short("; ".join(refusals) or "the action's credential order is empty")
        )

    def state(self) -> dict[str, object]:
        """Auth0 health for ``aegisctl status`` / ``doctor``: discovery, JWKS, last error.

        Never contains secrets or tokens.
        """
        return {
            **self._http.state(),
            **self._jwks.state(),
            **self._backchannel.state(),
            **self._vault.state(),
            **self._management.state(),
            **self._revoker.state(),
        }


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _identity(
    section: ManagementConfig | TokenVaultClientConfig | None, secret_name: str, label: str
) -> ClientIdentity | None:
    """The client an optional ``[auth0.*]`` section configures, if it is there."""
    if section is None:
        return None
    return ClientIdentity(
        client_id=section.client_id,
        method=section.client_auth,
        secret_name=secret_name,
        label=label,
    )

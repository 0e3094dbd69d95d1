"""End to end over real HTTP: ``Auth0Client`` against the local dev tenant.

Real sockets and the real clock (``autojump_clock`` would jump while a socket waits), so the
tenant announces a 0.2 s polling interval and every test has an absolute ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from aegisd.auth0.client import Auth0Client
from aegisd.auth0.rar import guardian_details
from aegisd.config import Auth0Config, CredentialSpec, ManagementConfig, TokenVaultClientConfig
from aegisd.devtenant import DevTenantOptions, open_dev_tenant
from aegisd.devtenant.server import DevTenant
from aegisd.errors import ApprovalDenied, CredentialUnavailable, RateLimited
from aegisd.secrets import MemorySecretStore

from .fake_auth0 import private_pem, public_pem

MSG = "Delete repo aegis-demo #a1b2c3"
GITHUB = CredentialSpec(kind="token_vault", connection="github")
LIMIT = 20.0


@asynccontextmanager
async def stack(
    *,
    audience: bool = False,
    client_key: RSAPrivateKey | None = None,
    rar: bool = False,
    scopes: tuple[str, ...] = (),
    **options: object,
) -> AsyncIterator[tuple[DevTenant, Auth0Client]]:
    opts = DevTenantOptions(
        interval=0.2,
        client_public_key_pem=public_pem(client_key).decode() if client_key else None,
        **options,  # type: ignore[arg-type]
    )
    async with open_dev_tenant(opts) as tenant, httpx.AsyncClient() as http:
        cfg = Auth0Config(
            issuer=tenant.issuer,
            allow_insecure_http=True,
            client_id=tenant.client_id,
            client_auth="private_key_jwt" if client_key else "client_secret_post",
            user_id=tenant.user_id,
            audience=tenant.audience if audience else None,
            requested_expiry=60,
            authorization_details=rar,
            scopes=list(scopes),
            management=ManagementConfig(client_id=tenant.mgmt_client_id),
            token_vault=TokenVaultClientConfig(client_id=tenant.api_client_id),
        )
        secrets = {
            "auth0_client_secret": tenant.client_secret,
            "management_client_secret": tenant.mgmt_client_secret,
            "token_vault_client_secret": tenant.api_client_secret,
        }
        if client_key:
            secrets["auth0_private_key"] = private_pem(client_key)
        yield tenant, Auth0Client(cfg, MemorySecretStore(secrets), http)


async def answer_on_phone(tenant: DevTenant, auth_req_id: str, approve: bool) -> None:
    """Wait for the push to show up, then answer it as the person would."""
    while not any(p.id == auth_req_id for p in tenant.pending()):
        await trio.sleep(0.01)
    await trio.sleep(0.5)  # let a poll or two see authorization_pending first
    (tenant.approve if approve else tenant.deny)(auth_req_id)


async def test_approve_then_token_vault_with_jwt_access_token() -> None:
    with trio.fail_after(LIMIT):
        async with stack(audience=True) as (tenant, client), trio.open_nursery() as nursery:
            t0 = trio.current_time()
            start = await client.start_approval(binding_message=MSG)
            pending = tenant.pending()
            assert [p.binding_message for p in pending] == [MSG]
            nursery.start_soon(answer_on_phone, tenant, start.auth_req_id, True)
            approval = await client.wait_approval(start)
            elapsed = trio.current_time() - t0
            assert approval.sub == tenant.user_id
            cred = await client.obtain_credential(GITHUB, approval)
            assert cred.path == "token_vault"
            stats = tenant.stats
            assert stats.slow_downs == 0  # we never polled faster than allowed
            # never faster than the interval: at most one poll per 0.2 s elapsed
            assert 1 <= stats.polls[start.auth_req_id] <= elapsed / 0.2 + 1
            assert stats.vault_scope_params == 0
            assert stats.token_vault_ok == 1  # the Custom API Client's exchange, first try
            assert client.state()["discovery"] == "ok"


async def test_deny() -> None:
    with trio.fail_after(LIMIT):
        async with stack() as (tenant, client), trio.open_nursery() as nursery:
            start = await client.start_approval(binding_message=MSG)
            nursery.start_soon(answer_on_phone, tenant, start.auth_req_id, False)
            with pytest.raises(ApprovalDenied):
                await client.wait_approval(start)


async def test_opaque_token_is_not_sent_to_token_vault_and_falls_back() -> None:
    with trio.fail_after(LIMIT):
        async with stack(auto_approve_ms=200) as (tenant, client):
            approval = await client.wait_approval(await client.start_approval(binding_message=MSG))
            cred = await client.obtain_credential(GITHUB, approval)
            assert cred.path == "management"
            assert tenant.stats.token_vault_exchanges == 0
            assert tenant.stats.client_credentials == 1


async def test_refresh_token_route_revokes_the_refresh_token() -> None:
    with trio.fail_after(LIMIT):
        async with stack(auto_approve_ms=200) as (tenant, client):
            start = await client.start_approval(binding_message=MSG, offline_access=True)
            approval = await client.wait_approval(start)
            assert approval.refresh_token is not None
            spec = CredentialSpec(kind="token_vault", connection="github", order=["token_vault"])
            cred = await client.obtain_credential(spec, approval)
            assert (cred.path, cred.refresh_token_revocation) == ("token_vault", "revoked")
            assert tenant.stats.revocations == 1
            with pytest.raises(CredentialUnavailable, match="HTTP 401"):
                await client.obtain_credential(spec, approval)  # revoked: no standing access


@pytest.mark.parametrize("omit_id_token", [False, True])
async def test_rar_in_guardians_shape_with_and_without_an_id_token(omit_id_token: bool) -> None:
    details = guardian_details(
        action="demo.delete",
        binding_message=MSG,
        caller="local-python",
        exe="/usr/bin/python3",
        pid=4242,
        params={"repo": "aegis-demo"},
    )
    with trio.fail_after(LIMIT):
        async with stack(
            audience=True, rar=True, auto_approve_ms=200, rar_omits_id_token=omit_id_token
        ) as (tenant, client):
            start = await client.start_approval(binding_message=MSG, authorization_details=details)
            approval = await client.wait_approval(start)
            assert approval.sub == tenant.user_id
            assert approval.id_token_verified is not omit_id_token
            assert approval.authorization_details == details


async def test_ciba_token_scopes_reach_the_tenant() -> None:
    with trio.fail_after(LIMIT):
        async with stack(audience=True, auto_approve_ms=200, scopes=("read:repos",)) as (_, c):
            start = await c.start_approval(binding_message=MSG, scopes=["delete:repos"])
            approval = await c.wait_approval(start)
            spec = CredentialSpec(kind="ciba_token", scopes=["delete:repos"])
            cred = await c.obtain_credential(spec, approval)
            assert cred.scope.split() == ["openid", "read:repos", "delete:repos"]


async def test_connection_with_token_vault_enabled_has_no_identity_token() -> None:
    with trio.fail_after(LIMIT):
        async with stack(mgmt_identity_tokens=False, auto_approve_ms=200) as (_, client):
            approval = await client.wait_approval(await client.start_approval(binding_message=MSG))
            with pytest.raises(CredentialUnavailable, match="no longer"):
                await client.obtain_credential(GITHUB, approval)


async def test_key_rotation_between_approvals() -> None:
    with trio.fail_after(LIMIT):
        async with stack(auto_approve_ms=100, keep_old_key_seconds=0) as (tenant, client):
            await client.wait_approval(await client.start_approval(binding_message=MSG))
            tenant.rotate_keys(keep_old=False)
            approval = await client.wait_approval(await client.start_approval(binding_message=MSG))
            assert approval.sub == tenant.user_id
            assert tenant.stats.jwks == 2


async def test_private_key_jwt(client_key: RSAPrivateKey) -> None:
    with trio.fail_after(LIMIT):
        async with stack(client_key=client_key, auto_approve_ms=100) as (_, client):
            approval = await client.wait_approval(await client.start_approval(binding_message=MSG))
            assert approval.access_token


async def test_rate_limited_start_is_reported() -> None:
    with trio.fail_after(LIMIT):
        async with stack() as (tenant, client):
            await client.start_approval(binding_message=MSG)  # discovery done, one push
            tenant.set_faults(burst_429=1, retry_after=7, paths=["/bc-authorize"])
            with pytest.raises(RateLimited) as exc_info:
                await client.start_approval(binding_message=MSG)
            assert exc_info.value.retry_after is not None
            assert sum(tenant.stats.faults.values()) == 1  # the one 429: no blind retry
            assert tenant.stats.bc_authorize_ok == 1

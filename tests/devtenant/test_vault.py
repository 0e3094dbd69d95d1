"""Token Vault exchange, client_credentials and the Management API over real HTTP."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
import trio

from aegisd.devtenant import open_dev_tenant

from .helpers import (
    FCAT,
    SUBJECT_RT,
    approved_tokens,
    fast,
    mgmt_token,
    secret_post,
    vault,
    verify_jwt,
)


async def _delete(c: httpx.AsyncClient, token: str, repo: str = "scratch") -> httpx.Response:
    return await c.delete(f"demo-api/repos/{repo}", headers={"authorization": f"Bearer {token}"})


async def test_access_token_exchange_gives_a_github_token_the_demo_api_accepts() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, audience=t.audience)
            resp = await vault(c, t, tokens["access_token"])
            deleted = await _delete(c, resp.json()["access_token"])
            stats = (t.stats.token_vault_exchanges, t.stats.token_vault_ok)
    assert resp.status_code == 200
    body = resp.json()
    assert body["access_token"].startswith("gho_")
    assert body["issued_token_type"] == FCAT and body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600
    assert "repo" in body["scope"].split()
    assert deleted.json() == {"deleted": "scratch", "by": t.user_id}
    assert stats == (1, 1)


async def test_access_token_exchange_from_any_client_but_the_custom_api_client_is_403() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, audience=t.audience)
            by_app = await vault(c, t, tokens["access_token"], as_app=True)
            mgmt = {"client_id": t.mgmt_client_id, "client_secret": t.mgmt_client_secret}
            by_mgmt = await vault(c, t, tokens["access_token"], **mgmt)
    assert (by_app.status_code, by_app.json()["error"]) == (403, "unauthorized_client")
    assert by_mgmt.status_code == 403


async def test_refresh_token_is_exchanged_only_by_its_own_client_and_revocable() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rt = (await approved_tokens(c, t, scope="openid offline_access"))["refresh_token"]
            by_api = await vault(c, t, rt, subject_type=SUBJECT_RT, as_app=False)
            other = await c.post(
                "oauth/revoke",
                data={
                    "client_id": t.api_client_id,
                    "client_secret": t.api_client_secret,
                    "token": rt,
                },
            )
            still = await vault(c, t, rt, subject_type=SUBJECT_RT)
            revoked = await c.post("oauth/revoke", data={**secret_post(t), "token": rt})
            again = await c.post("oauth/revoke", data={**secret_post(t), "token": rt})
            after = await vault(c, t, rt, subject_type=SUBJECT_RT)
            unauth = await c.post("oauth/revoke", data={"client_id": t.client_id, "token": rt})
            count = t.stats.revocations
    assert by_api.status_code == 401
    assert other.status_code == 200 and still.status_code == 200  # not its token: kept
    assert (revoked.status_code, revoked.content) == (200, b"")
    assert again.status_code == 200  # RFC 7009: revoking twice is fine
    assert after.status_code == 401
    assert unauth.status_code == 401
    assert count == 1


async def test_refresh_token_exchange_works_too() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, scope="openid offline_access")
            resp = await vault(c, t, tokens["refresh_token"], subject_type=SUBJECT_RT)
            bad = await vault(c, t, "not-a-refresh-token", subject_type=SUBJECT_RT)
    assert resp.status_code == 200 and resp.json()["access_token"].startswith("gho_")
    assert bad.status_code == 401


async def test_vault_refuses_opaque_tokens_by_default_and_accepts_them_only_when_told() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            opaque = await approved_tokens(c, t)
            refused = await vault(c, t, opaque["access_token"], as_app=True)
            refusals = t.stats.token_vault_refused
        async with (
            open_dev_tenant(fast(vault_refuses_opaque=False)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            opaque = await approved_tokens(c, t)
            accepted = await vault(c, t, opaque["access_token"], as_app=True)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_grant")
    assert refusals == 1
    assert accepted.status_code == 200


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"connection": "gitlab"}, 401, "federated_connection_refresh_token_not_found"),
        ({"login_hint": "999"}, 401, "federated_connection_refresh_token_not_found"),
        ({"requested_token_type": "urn:x"}, 400, "invalid_request"),
        ({"subject_token": "forged"}, 401, "invalid_grant"),
    ],
)
async def test_vault_refusals(changes: dict[str, str], status: int, error: str) -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, audience=t.audience)
            subject = changes.pop("subject_token", tokens["access_token"])
            connection = changes.pop("connection", "github")
            resp = await vault(c, t, subject, connection=connection, **changes)
    assert (resp.status_code, resp.json()["error"]) == (status, error)


async def test_login_hint_selects_the_provider_account() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, audience=t.audience)
            resp = await vault(c, t, tokens["access_token"], login_hint="5550123")
    assert resp.status_code == 200


async def test_vault_can_omit_scope_and_counts_scope_params() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(vault_omits_scope=True)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            tokens = await approved_tokens(c, t, audience=t.audience)
            resp = await vault(c, t, tokens["access_token"], scope="repo")
            counted = t.stats.vault_scope_params
    assert resp.status_code == 200 and "scope" not in resp.json()
    assert counted == 1


async def test_vault_scope_parameter_narrows_and_reports_a_difference() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            at = (await approved_tokens(c, t, audience=t.audience))["access_token"]
            same = await vault(c, t, at, scope="repo")
            wider = await vault(c, t, at, scope="repo admin:org")
    assert same.status_code == 200 and "scope" not in same.json()  # as asked
    assert wider.json()["scope"] == "repo"  # differs from the ask: returned


async def test_vault_disabled_is_unauthorized_client() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(vault_enabled=False)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            tokens = await approved_tokens(c, t, audience=t.audience)
            resp = await vault(c, t, tokens["access_token"])
    assert (resp.status_code, resp.json()["error"]) == (403, "unauthorized_client")


async def test_expired_provider_tokens_are_refreshed_by_the_vault_and_refused_by_the_api() -> None:
    clock = [1_000_000.0]
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(provider_token_ttl=60), now=lambda: clock[0]) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            aud = {"audience": t.audience}
            first = (await vault(c, t, (await approved_tokens(c, t, **aud))["access_token"])).json()
            clock[0] += 61
            stale = await _delete(c, first["access_token"])
            second = (
                await vault(c, t, (await approved_tokens(c, t, **aud))["access_token"])
            ).json()
            fresh = await _delete(c, second["access_token"])
    assert stale.status_code == 401 and stale.json()["message"] == "Bad credentials"
    assert second["access_token"] != first["access_token"]
    assert fresh.status_code == 200


async def test_management_token_and_user_identities() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            token = await mgmt_token(c, t)
            claims = await verify_jwt(c, t, token, t.mgmt_audience)
            resp = await c.get(
                f"api/v2/users/{quote(t.user_id, safe='')}",
                params={"fields": "identities", "include_fields": "true"},
                headers={"authorization": f"Bearer {token}"},
            )
            gh_token = next(i for i in resp.json()["identities"] if i["provider"] == "github")
            deleted = await _delete(c, gh_token["access_token"])
            stats = (t.stats.client_credentials, t.stats.mgmt_calls)
    assert claims["scope"] == "read:users read:user_idp_tokens"
    assert resp.status_code == 200
    assert list(resp.json()) == ["identities"]  # fields/include_fields honoured
    assert gh_token["connection"] == "github" and gh_token["isSocial"] is True
    assert isinstance(gh_token["user_id"], int)  # GitHub's id is a JSON number
    assert "x-ratelimit-remaining" in resp.headers
    assert deleted.status_code == 200
    assert stats == (1, 1)


async def test_management_scope_checks() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(mgmt_scopes=["read:users"])) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            token = await mgmt_token(c, t)
            resp = await c.get(
                f"api/v2/users/{quote(t.user_id, safe='')}",
                headers={"authorization": f"Bearer {token}"},
            )
        async with (
            open_dev_tenant(fast(mgmt_scopes=["read:user_idp_tokens"])) as t2,
            httpx.AsyncClient(base_url=t2.issuer) as c2,
        ):
            token2 = await mgmt_token(c2, t2)
            forbidden = await c2.get(
                f"api/v2/users/{quote(t2.user_id, safe='')}",
                headers={"authorization": f"Bearer {token2}"},
            )
    identities = resp.json()["identities"]
    assert all("access_token" not in i for i in identities)  # no read:user_idp_tokens
    assert forbidden.status_code == 403
    assert forbidden.json()["errorCode"] == "insufficient_scope"


async def test_identity_without_access_token_models_a_vault_enabled_connection() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(mgmt_identity_tokens=False)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            token = await mgmt_token(c, t)
            resp = await c.get(
                f"api/v2/users/{quote(t.user_id, safe='')}",
                headers={"authorization": f"Bearer {token}"},
            )
    github = next(i for i in resp.json()["identities"] if i["connection"] == "github")
    assert "access_token" not in github


async def test_management_api_rejects_bad_bearers_and_unknown_users() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            user_path = f"api/v2/users/{quote(t.user_id, safe='')}"
            missing = await c.get(user_path)
            # a CIBA JWT for the demo API is not a Management API token
            ciba_at = (await approved_tokens(c, t, audience=t.audience))["access_token"]
            wrong_aud = await c.get(user_path, headers={"authorization": f"Bearer {ciba_at}"})
            token = await mgmt_token(c, t)
            unknown = await c.get(
                "api/v2/users/auth0%7Cnobody", headers={"authorization": f"Bearer {token}"}
            )
    assert missing.status_code == 401 and wrong_aud.status_code == 401
    assert unknown.status_code == 404 and unknown.json()["errorCode"] == "inexistent_user"


@pytest.mark.parametrize(
    ("who", "audience", "error"),
    [
        ("app", "mgmt", "access_denied"),
        ("mgmt", None, "access_denied"),
        ("mgmt", "https://elsewhere/api/v2/", "access_denied"),
    ],
)
async def test_client_credentials_refusals(who: str, audience: str | None, error: str) -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            cid, secret = (
                (t.client_id, t.client_secret)
                if who == "app"
                else (t.mgmt_client_id, t.mgmt_client_secret)
            )
            data = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
            if audience is not None:
                data["audience"] = t.mgmt_audience if audience == "mgmt" else audience
            resp = await c.post("oauth/token", data=data)
    assert (resp.status_code, resp.json()["error"]) == (403, error)

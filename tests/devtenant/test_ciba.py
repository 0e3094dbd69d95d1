"""CIBA over real HTTP: /bc-authorize validation and client authentication, then polling."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aegisd.auth0.rar import guardian_details
from aegisd.devtenant import UnknownRequest, open_dev_tenant

from .helpers import (
    CIBA_GRANT,
    INTERVAL,
    approved_tokens,
    fast,
    login_hint,
    poll,
    sleep_interval,
    start,
    verify_jwt,
)


async def test_start_answers_a_64_char_id_expiry_and_interval() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(c, t, requested_expiry="120")
    assert resp.status_code == 200
    body = resp.json()
    assert len(body["auth_req_id"]) == 64
    assert set(body["auth_req_id"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert body["expires_in"] == 120
    assert body["interval"] == INTERVAL


async def test_default_interval_and_expiry_are_auth0s() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant() as t, httpx.AsyncClient(base_url=t.issuer) as c:
            body = (await start(c, t)).json()
    assert (body["expires_in"], body["interval"]) == (300, 5)


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"scope": "profile"}, 400, "invalid_request"),
        ({"binding_message": None}, 400, "invalid_request"),
        ({"binding_message": "x" * 65}, 400, "invalid_request"),
        ({"binding_message": "Delete $HOME!"}, 400, "invalid_request"),
        ({"requested_expiry": "0"}, 400, "invalid_request"),
        ({"requested_expiry": "301"}, 400, "invalid_request"),
        ({"requested_expiry": "soon"}, 400, "invalid_request"),
        ({"login_hint": None}, 400, "invalid_request"),
        ({"login_hint": "auth0|aegis-demo"}, 400, "invalid_request"),
        ({"authorization_details": "{}"}, 400, "invalid_request"),
        ({"authorization_details": '[{"no_type": 1}]'}, 400, "invalid_request"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"audience": "https://unknown.example/api"}, 403, "access_denied"),
    ],
)
async def test_start_errors(fields: dict[str, str | None], status: int, error: str) -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(c, t, **fields)
            assert t.pending() == []
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert resp.json()["error_description"]


async def test_missing_openid_has_auth0s_exact_description() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(c, t, scope="email")
    assert resp.json() == {
        "error": "invalid_request",
        "error_description": "openid scope must be requested",
    }


async def test_unknown_user_is_unknown_user_id() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(c, t, login_hint=login_hint(t, "auth0|nobody"))
    assert resp.status_code == 400
    assert resp.json()["error"] == "unknown_user_id"


async def test_the_per_user_cap_is_five_starts_a_minute() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            answers = [await start(c, t) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.json()["error"] == "too_many_requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert int(refused.headers["x-ratelimit-reset"]) >= int(time.time())


async def test_client_secret_basic_authenticates_and_a_wrong_one_does_not() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            good = await c.post(
                "bc-authorize",
                auth=(t.client_id, t.client_secret),
                data={
                    "scope": "openid",
                    "login_hint": login_hint(t),
                    "binding_message": "Basic auth",
                },
            )
            bad = await c.post(
                "bc-authorize",
                auth=(t.client_id, "nope"),
                data={"scope": "openid", "login_hint": login_hint(t), "binding_message": "x"},
            )
            both = await c.post(
                "bc-authorize",
                auth=(t.client_id, t.client_secret),
                data={
                    "client_secret": t.client_secret,
                    "scope": "openid",
                    "login_hint": login_hint(t),
                    "binding_message": "x",
                },
            )
    assert good.status_code == 200
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_client")
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _assertion(key: rsa.RSAPrivateKey, client_id: str, aud: str, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60}
    body["jti"] = uuid.uuid4().hex
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256")


async def test_private_key_jwt_rules() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with trio.fail_after(15):
        async with (
            open_dev_tenant(
                fast(client_public_key_pem=pem.decode(), ciba_per_user_per_minute=None)
            ) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):

            async def attempt(assertion: str) -> httpx.Response:
                return await c.post(
                    "bc-authorize",
                    data={
                        "client_id": t.client_id,
                        "client_assertion": assertion,
                        "client_assertion_type": ASSERTION_TYPE,
                        "scope": "openid",
                        "login_hint": login_hint(t),
                        "binding_message": "Key auth",
                    },
                )

            good = _assertion(key, t.client_id, t.issuer)
            ok = await attempt(good)
            replay = await attempt(good)
            no_slash = await attempt(_assertion(key, t.client_id, t.issuer.rstrip("/")))
            too_long = await attempt(
                _assertion(key, t.client_id, t.issuer, exp=int(time.time()) + 3600)
            )
            wrong_key = await attempt(_assertion(other, t.client_id, t.issuer))
            wrong_sub = await attempt(_assertion(key, t.client_id, t.issuer, sub="someone"))
            expired = await attempt(
                _assertion(key, t.client_id, t.issuer, exp=int(time.time()) - 60)
            )
    assert ok.status_code == 200, ok.text
    for refused in (replay, no_slash, too_long, wrong_key, wrong_sub, expired):
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


async def test_private_key_jwt_is_refused_without_a_registered_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await c.post(
                "bc-authorize",
                data={
                    "client_id": t.client_id,
                    "client_assertion": _assertion(key, t.client_id, t.issuer),
                    "client_assertion_type": ASSERTION_TYPE,
                    "scope": "openid",
                    "login_hint": login_hint(t),
                    "binding_message": "x",
                },
            )
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")


async def test_polling_pending_then_approved_then_single_use() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rid = (await start(c, t, audience=t.audience)).json()["auth_req_id"]
            pending = await poll(c, t, rid)
            [shown] = t.pending()
            t.approve(rid)
            await sleep_interval()
            granted = await poll(c, t, rid, as_json=True)  # Auth0 accepts JSON here too
            await sleep_interval()
            again = await poll(c, t, rid)
            polls = t.stats.polls[rid]
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    assert shown.id == rid and shown.binding_message == "Delete repo demo 1a2b"
    assert granted.status_code == 200
    assert granted.json()["token_type"] == "Bearer"
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert polls == 3


async def test_id_token_and_jwt_access_token_claims() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, audience=t.audience, scope="openid email")
            id_claims = await verify_jwt(c, t, tokens["id_token"], t.client_id)
            at_claims = await verify_jwt(c, t, tokens["access_token"], t.audience)
    assert id_claims["iss"] == t.issuer and id_claims["sub"] == t.user_id
    assert id_claims["aud"] == t.client_id
    assert id_claims["exp"] > time.time() and "iat" in id_claims and "auth_time" in id_claims
    assert t.audience in at_claims["aud"]
    assert at_claims["scope"] == "openid email"
    assert tokens["scope"] == "openid email"
    assert "refresh_token" not in tokens


async def test_without_audience_the_access_token_is_opaque() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t)
            userinfo = await c.get(
                "userinfo", headers={"authorization": f"Bearer {tokens['access_token']}"}
            )
    with pytest.raises(jwt.DecodeError):
        jwt.get_unverified_header(tokens["access_token"])
    assert userinfo.json()["sub"] == t.user_id


async def test_offline_access_adds_a_refresh_token_and_rar_is_echoed() -> None:
    details = guardian_details(
        action="demo.delete",
        binding_message="Delete repo demo",
        caller="local-python",
        exe="/usr/bin/python3.12",
        pid=4242,
        params={"repo": "demo"},
    )
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(
                c,
                t,
                scope="openid offline_access",
                audience=t.audience,
                authorization_details=json.dumps(details),
            )
            [shown] = t.pending()
            page = (await c.get("/")).text
            t.approve(resp.json()["auth_req_id"])
            tokens = (await poll(c, t, resp.json()["auth_req_id"])).json()
    assert shown.authorization_details == details
    assert tokens["refresh_token"]
    assert tokens["authorization_details"] == details
    assert "id_token" in tokens  # rar_omits_id_token models Auth0's RAR sample
    # the phone renders what Guardian shows: the caller's program and pid, each parameter
    assert "Delete repo demo" in page
    for name, value in [("program", "python3.12"), ("pid", "4242"), ("param.repo", "demo")]:
        assert f'<th>{name}</th><td class="rar-value">{value}</td>' in page


def _prop(name: str = "caller", value: str = "python", **over: object) -> dict[str, object]:
    return {"display": True, "name": name, "display_order": 1, "value": value, **over}


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([], "1 to 5"),
        ([{"instruction": "x", "properties": [_prop()]}] * 2, "exactly one"),
        ([{"properties": [_prop()]}], "instruction"),
        ([{"instruction": "x", "properties": {"caller": _prop()}}], "1 to 10"),
        ([{"instruction": "x", "properties": [_prop()] * 11}], "1 to 10"),
        ([{"instruction": "x", "properties": [{"name": "a", "value": "b"}]}], "display"),
        ([{"instruction": "x", "properties": [_prop(name="a b")]}], "names"),
        ([{"instruction": "x", "properties": [_prop(value="v" * 256)]}], "255"),
        ([{"instruction": "x", "properties": [_prop(display="yes")]}], "boolean"),
        ([{"type": "urn:x:other", "instruction": "x", "properties": [_prop()]}], "registered"),
    ],
)
async def test_rar_that_guardian_cannot_render_is_refused(
    entries: list[dict[str, object]], why: str
) -> None:
    typed = [{"type": "urn:auth0:schemas:authorization-details:v1:aegis", **e} for e in entries]
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await start(c, t, audience=t.audience, authorization_details=json.dumps(typed))
            no_audience = await start(
                c,
                t,
                authorization_details=json.dumps(
                    guardian_details(
                        action="a", binding_message="m", caller="c", exe="", pid=1, params={}
                    )
                ),
            )
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")
    assert why in resp.json()["error_description"]
    assert "audience" in no_audience.json()["error_description"]


async def test_rar_approval_without_an_id_token_when_configured() -> None:
    details = guardian_details(
        action="a", binding_message="m", caller="c", exe="", pid=1, params={}
    )
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(rar_omits_id_token=True)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            rar = await start(c, t, audience=t.audience, authorization_details=json.dumps(details))
            plain = await start(c, t)
            for r in (rar, plain):
                t.approve(r.json()["auth_req_id"])
            with_rar = (await poll(c, t, rar.json()["auth_req_id"])).json()
            without = (await poll(c, t, plain.json()["auth_req_id"])).json()
    assert "id_token" not in with_rar and with_rar["authorization_details"] == details
    assert "id_token" in without


async def test_denied_request_answers_access_denied() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rid = (await start(c, t)).json()["auth_req_id"]
            t.deny(rid)
            resp = await poll(c, t, rid)
            with pytest.raises(UnknownRequest):
                t.approve(rid)  # an answered request cannot be answered again
    assert (resp.status_code, resp.json()["error"]) == (400, "access_denied")


async def test_expiry_answers_access_denied_with_auth0s_description() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rid = (await start(c, t, requested_expiry="1")).json()["auth_req_id"]
            await trio.sleep(1.05)
            resp = await poll(c, t, rid)
            assert t.pending() == []
            with pytest.raises(UnknownRequest):
                t.approve(rid)
    assert resp.json() == {
        "error": "access_denied",
        "error_description": (
            "The end-user denied the authorization request or it has been expired"
        ),
    }


async def test_unknown_or_foreign_auth_req_id_is_invalid_grant() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            unknown = await poll(c, t, "x" * 64)
            rid = (await start(c, t)).json()["auth_req_id"]
            foreign = await c.post(
                "oauth/token",
                data={
                    "grant_type": CIBA_GRANT,
                    "auth_req_id": rid,
                    "client_id": t.mgmt_client_id,
                    "client_secret": t.mgmt_client_secret,
                },
            )
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_grant")
    assert foreign.status_code == 403 and foreign.json()["error"] == "unauthorized_client"


async def test_polling_too_fast_is_slow_down_with_a_growing_interval() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rid = (await start(c, t)).json()["auth_req_id"]
            first = await poll(c, t, rid)
            fast_one = await poll(c, t, rid)
            faster = await poll(c, t, rid)
            slow_downs = t.stats.slow_downs
    assert first.json()["error"] == "authorization_pending"
    assert (fast_one.status_code, fast_one.json()["error"]) == (400, "slow_down")
    assert fast_one.json()["interval"] == pytest.approx(INTERVAL + 5)
    assert int(fast_one.headers["retry-after"]) >= 5
    assert faster.json()["interval"] == pytest.approx(INTERVAL + 10)
    assert slow_downs == 2


async def test_slow_down_can_be_switched_off() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(slow_down_enforced=False)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            rid = (await start(c, t)).json()["auth_req_id"]
            answers = [(await poll(c, t, rid)).json()["error"] for _ in range(3)]
    assert answers == ["authorization_pending"] * 3


async def test_auto_approve_answers_after_the_delay() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(auto_approve_ms=100)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            rid = (await start(c, t)).json()["auth_req_id"]
            early = await poll(c, t, rid)
            await sleep_interval()
            late = await poll(c, t, rid)
    assert early.json()["error"] == "authorization_pending"
    assert late.status_code == 200 and late.json()["id_token"]


async def test_unsupported_and_missing_grant_types() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            creds = {"client_id": t.client_id, "client_secret": t.client_secret}
            missing = await c.post("oauth/token", data=creds)
            odd = await c.post("oauth/token", data={**creds, "grant_type": "password"})
            basic = base64.b64encode(f"{t.client_id}:{t.client_secret}".encode()).decode()
            repeated = await c.post(
                "oauth/token",
                content=f"grant_type={CIBA_GRANT}&grant_type={CIBA_GRANT}",
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "authorization": f"Basic {basic}",
                },
            )
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    assert (odd.status_code, odd.json()["error"]) == (400, "unsupported_grant_type")
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")

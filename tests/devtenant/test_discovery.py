"""Discovery, JWKS and key rotation over real HTTP."""

from __future__ import annotations

import httpx
import jwt
import pytest
import trio

from aegisd.devtenant import open_dev_tenant

from .helpers import approved_tokens, fast, verify_jwt


async def test_discovery_document_matches_auth0_shape() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            doc = (await c.get(".well-known/openid-configuration")).json()
    assert t.issuer == f"http://127.0.0.1:{t.port}/"
    assert doc["issuer"] == t.issuer
    assert doc["token_endpoint"] == t.issuer + "oauth/token"
    assert doc["jwks_uri"] == t.issuer + ".well-known/jwks.json"
    assert doc["backchannel_authentication_endpoint"] == t.issuer + "bc-authorize"
    assert doc["backchannel_token_delivery_modes_supported"] == ["poll"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert "urn:openid:params:grant-type:ciba" in doc["grant_types_supported"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_jwks_publishes_one_rsa_2048_key_with_kid() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            keys = (await c.get(".well-known/jwks.json")).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["kid"]
    assert jwt.PyJWK(keys[0]).key.key_size == 2048


@pytest.mark.parametrize("keep_old", [True, False])
async def test_rotation_signs_with_a_new_kid_and_keeps_or_drops_the_old(keep_old: bool) -> None:
    with trio.fail_after(15):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            before = await approved_tokens(c, t)
            old_kid = jwt.get_unverified_header(before["id_token"])["kid"]
            resp = await c.post("_dev/rotate-keys", json={"keep_old": keep_old})
            assert resp.status_code == 200
            new_kid = resp.json()["kid"]
            kids = [k["kid"] for k in (await c.get(".well-known/jwks.json")).json()["keys"]]
            after = await approved_tokens(c, t)
            claims = await verify_jwt(c, t, after["id_token"], t.client_id)
    assert new_kid != old_kid
    assert jwt.get_unverified_header(after["id_token"])["kid"] == new_kid
    assert kids[0] == new_kid
    assert (old_kid in kids) is keep_old
    assert claims["sub"] == t.user_id


async def test_old_key_leaves_the_jwks_after_its_grace_period() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(keep_old_key_seconds=0.3)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            old = (await c.get(".well-known/jwks.json")).json()["keys"][0]["kid"]
            t.rotate_keys()
            during = [k["kid"] for k in (await c.get(".well-known/jwks.json")).json()["keys"]]
            await trio.sleep(0.4)
            after = [k["kid"] for k in (await c.get(".well-known/jwks.json")).json()["keys"]]
    assert old in during
    assert old not in after and len(after) == 1

"""Shared helpers for the dev tenant's tests: option presets and small HTTP clients of it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import trio

from aegisd.devtenant import DevTenant, DevTenantOptions

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
VAULT_GRANT = "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
SUBJECT_AT = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_RT = "urn:ietf:params:oauth:token-type:refresh_token"
FCAT = "http://auth0.com/oauth/token-type/federated-connection-access-token"
INTERVAL = 0.3


def fast(**changes: Any) -> DevTenantOptions:
    """Options for tests: a short interval and a tight slow_down tolerance."""
    base: dict[str, Any] = {"interval": INTERVAL, "slow_down_tolerance": 0.05}
    base.update(changes)
    return DevTenantOptions(**base)


def login_hint(t: DevTenant, sub: str | None = None) -> str:
    return json.dumps({"format": "iss_sub", "iss": t.issuer, "sub": sub or t.user_id})


def secret_post(t: DevTenant) -> dict[str, str]:
    return {"client_id": t.client_id, "client_secret": t.client_secret}


async def start(client: httpx.AsyncClient, t: DevTenant, **fields: str | None) -> httpx.Response:
    """POST /bc-authorize with valid defaults; a field set to None is left out."""
    body: dict[str, str | None] = {
        **secret_post(t),
        "scope": "openid",
        "login_hint": login_hint(t),
        "binding_message": "Delete repo demo 1a2b",
    }
    body.update(fields)
    return await client.post("bc-authorize", data={k: v for k, v in body.items() if v is not None})


async def poll(
    client: httpx.AsyncClient, t: DevTenant, auth_req_id: str, *, as_json: bool = False
) -> httpx.Response:
    body = {**secret_post(t), "grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}
    if as_json:
        return await client.post("oauth/token", json=body)
    return await client.post("oauth/token", data=body)


async def approved_tokens(
    client: httpx.AsyncClient, t: DevTenant, **fields: str | None
) -> dict[str, Any]:
    """Start a request, approve it on the tenant, poll once: the token answer."""
    resp = await start(client, t, **fields)
    assert resp.status_code == 200, resp.text
    t.approve(resp.json()["auth_req_id"])
    answer = await poll(client, t, resp.json()["auth_req_id"])
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def vault(
    client: httpx.AsyncClient,
    t: DevTenant,
    subject_token: str,
    *,
    subject_type: str = SUBJECT_AT,
    connection: str = "github",
    as_app: bool | None = None,
    **extra: str,
) -> httpx.Response:
    """A Token Vault exchange; by default as Auth0 wants it: a refresh token by the
    application, an access token by the Custom API Client of its audience."""
    app = subject_type != SUBJECT_AT if as_app is None else as_app
    creds = (
        secret_post(t)
        if app
        else {"client_id": t.api_client_id, "client_secret": t.api_client_secret}
    )
    body = {
        **creds,
        "grant_type": VAULT_GRANT,
        "subject_token": subject_token,
        "subject_token_type": subject_type,
        "requested_token_type": FCAT,
        "connection": connection,
        **extra,
    }
    return await client.post("oauth/token", data=body)


async def mgmt_token(client: httpx.AsyncClient, t: DevTenant) -> str:
    resp = await client.post(
        "oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": t.mgmt_client_id,
            "client_secret": t.mgmt_client_secret,
            "audience": t.mgmt_audience,
        },
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


async def verify_jwt(
    client: httpx.AsyncClient, t: DevTenant, token: str, audience: str
) -> dict[str, Any]:
    """Verify a tenant JWT against its published JWKS, as a relying party would."""
    jwks = jwt.PyJWKSet.from_dict((await client.get(".well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return dict(
        jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=t.issuer)
    )


async def sleep_interval() -> None:
    await trio.sleep(INTERVAL)

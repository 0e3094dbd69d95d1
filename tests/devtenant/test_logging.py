"""One log line per request, and never a secret or token in it; issued_secrets() for scans."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx
import pytest
import trio

from aegisd.devtenant import open_dev_tenant

from .helpers import approved_tokens, fast, mgmt_token, vault


async def test_request_log_lines_hold_no_secret_and_issued_secrets_lists_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aegisd.devtenant")
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            tokens = await approved_tokens(c, t, scope="openid offline_access", audience=t.audience)
            provider = (await vault(c, t, tokens["access_token"])).json()["access_token"]
            await c.post(
                "oauth/revoke",
                data={
                    "client_id": t.client_id,
                    "client_secret": t.client_secret,
                    "token": tokens["refresh_token"],
                },
            )
            m_token = await mgmt_token(c, t)
            await c.get(
                f"api/v2/users/{quote(t.user_id, safe='')}",
                params={"fields": "identities", "include_fields": "true"},
                headers={"authorization": f"Bearer {m_token}"},
            )
            await c.post(f"phone/approve/{'x' * 64}", headers={"accept": "application/json"})
            issued = t.issued_secrets()
    lines = [r.getMessage() for r in caplog.records if r.name == "aegisd.devtenant"]
    requests = [line for line in lines if line.startswith(("GET ", "POST "))]
    assert len(requests) == 7
    assert requests[0].startswith("POST /bc-authorize 200 ")
    assert any(line.startswith("GET /api/v2/users/auth0|aegis-demo 200 ") for line in requests)
    assert "fields=" not in "\n".join(lines)  # the query string is dropped
    expected = {
        t.client_secret,
        t.mgmt_client_secret,
        tokens["access_token"],
        tokens["id_token"],
        tokens["refresh_token"],
        provider,
        m_token,
    }
    assert expected <= set(issued)
    text = "\n".join(lines)
    for secret in issued:
        assert secret not in text
    assert "x" * 64 not in text  # long ids are shortened in the path

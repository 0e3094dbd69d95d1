"""The phone: the HTML page, its JSON and form endpoints, and a real click in Chromium."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from aegisd.devtenant import open_dev_tenant

from .cdp import find_chromium, open_page
from .helpers import fast, poll, start

RAR = [
    {
        "type": "urn:auth0:schemas:authorization-details:v1:aegis",
        "instruction": "Delete repo <b>demo</b>",
        "properties": [
            {
                "display": True,
                "name": "caller",
                "display_order": 1,
                "value": "/usr/bin/python3 <pid 42>",
            },
            {"display": False, "name": "hidden", "display_order": 2, "value": "not shown"},
        ],
    }
]


async def test_page_lists_pending_requests_escaped_with_buttons() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            empty = (await c.get("/")).text
            rid = (
                await start(
                    c,
                    t,
                    scope="openid email",
                    audience=t.audience,
                    authorization_details=json.dumps(RAR),
                )
            ).json()["auth_req_id"]
            page = await c.get("/")
    assert "No pending requests." in empty
    html = page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "Delete repo demo 1a2b" in html
    assert "<code>email</code>" in html and t.audience in html
    assert "&lt;b&gt;demo&lt;/b&gt;" in html and "<b>demo</b>" not in html
    assert "/usr/bin/python3 &lt;pid 42&gt;" in html
    assert "not shown" not in html  # Guardian shows only properties with display: true
    assert f'action="/phone/approve/{rid}"' in html and f'action="/phone/deny/{rid}"' in html
    assert 'http-equiv="refresh"' in html
    assert " s left" in html


async def test_json_pending_and_the_answer_endpoints() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            a = (await start(c, t)).json()["auth_req_id"]
            b = (await start(c, t, binding_message="Second")).json()["auth_req_id"]
            listed = (await c.get("phone/pending")).json()["pending"]
            as_browser = await c.post(f"phone/approve/{a}")
            as_script = await c.post(f"phone/deny/{b}", headers={"accept": "application/json"})
            again = await c.post(f"phone/deny/{b}", headers={"accept": "application/json"})
            approved = await poll(c, t, a)
            denied = await poll(c, t, b)
            stats = (t.stats.approvals, t.stats.denials)
    assert [p["id"] for p in listed] == [a, b]
    assert listed[1]["binding_message"] == "Second"
    assert listed[0]["scope"] == ["openid"] and listed[0]["expires_at"] > listed[0]["created_at"]
    assert (as_browser.status_code, as_browser.headers["location"]) == (303, "/")
    assert as_script.json() == {"id": b, "status": "denied"}
    assert again.status_code == 404
    assert approved.status_code == 200
    assert denied.json()["error"] == "access_denied"
    assert stats == (1, 1)


CHROMIUM = find_chromium()
BODY_TEXT = "document.body ? document.body.innerText : ''"


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)
async def test_approving_by_clicking_in_headless_chromium() -> None:
    assert CHROMIUM is not None
    with trio.fail_after(60):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            rid = (
                await start(
                    c,
                    t,
                    binding_message="Click me",
                    audience=t.audience,
                    authorization_details=json.dumps(RAR),
                )
            ).json()["auth_req_id"]
            other = (await start(c, t, binding_message="Leave me")).json()["auth_req_id"]
            async with open_page(CHROMIUM, t.phone_url) as page:
                text = ""
                while "Click me" not in text:
                    text = await page.evaluate(BODY_TEXT) or ""
                    await trio.sleep(0.1)
                assert "Leave me" in text and "/usr/bin/python3 <pid 42>" in text
                locate = (
                    "(() => { const b = document.querySelector("
                    f"'section[data-id=\"{rid}\"] button.approve');"
                    " if (!b) return null; b.scrollIntoView({block: 'center'});"
                    " const r = b.getBoundingClientRect();"
                    " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
                )
                # the page refreshes itself every few seconds: retry a click lost to a reload
                while any(p.id == rid for p in t.pending()):
                    spot = await page.evaluate(locate)
                    if spot is not None:
                        await page.click(spot["x"], spot["y"])
                    await trio.sleep(0.3)
                after = ""
                while "Click me" in after or "Leave me" not in after:
                    after = (
                        await page.evaluate("document.body ? document.body.innerText : ''") or ""
                    )
                    await trio.sleep(0.1)
            granted = await poll(c, t, rid)
            still = [p.id for p in t.pending()]
    assert granted.status_code == 200 and granted.json()["id_token"]
    assert still == [other]  # the click approved exactly the one request

"""The demo resource server: which tokens it accepts and what it echoes."""

from __future__ import annotations

import httpx
import trio

from aegisd.devtenant import open_dev_tenant

from .helpers import approved_tokens, fast, vault


async def _github_token(c: httpx.AsyncClient, t: object, connection: str = "github") -> str:
    tokens = await approved_tokens(c, t, audience=t.audience)  # type: ignore[arg-type,attr-defined]
    resp = await vault(c, t, tokens["access_token"], connection=connection)  # type: ignore[arg-type]
    return str(resp.json()["access_token"])


async def test_listing_is_public_and_delete_needs_a_github_token() -> None:
    with trio.fail_after(10):
        async with (
            open_dev_tenant(fast(ciba_per_user_per_minute=None)) as t,
            httpx.AsyncClient(base_url=t.issuer) as c,
        ):
            listing = (await c.get("demo-api/repos")).json()
            anonymous = await c.delete("demo-api/repos/scratch")
            ciba_at = (await approved_tokens(c, t, audience=t.audience))["access_token"]
            with_ciba = await c.delete(
                "demo-api/repos/scratch", headers={"authorization": f"Bearer {ciba_at}"}
            )
            google = await _github_token(c, t, "google-oauth2")
            with_google = await c.delete(
                "demo-api/repos/scratch", headers={"authorization": f"Bearer {google}"}
            )
            gh = await _github_token(c, t)
            auth = {"authorization": f"Bearer {gh}"}
            deleted = await c.delete("demo-api/repos/scratch", headers=auth)
            gone = await c.delete("demo-api/repos/scratch", headers=auth)
            after = [r["name"] for r in (await c.get("demo-api/repos")).json()]
    assert "scratch" in [r["name"] for r in listing]
    assert anonymous.status_code == with_ciba.status_code == with_google.status_code == 401
    assert deleted.json() == {"deleted": "scratch", "by": t.user_id}
    assert gone.status_code == 404
    assert "scratch" not in after


async def test_issue_creation_and_whoami() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            auth = {"authorization": f"Bearer {await _github_token(c, t)}"}
            created = await c.post(
                "demo-api/repos/aegis-demo/issues",
                json={"title": "Hello <world>", "body": "from a test"},
                headers=auth,
            )
            invalid = await c.post("demo-api/repos/aegis-demo/issues", json=[1], headers=auth)
            me = await c.get("demo-api/user", headers=auth)
    assert created.status_code == 201
    assert created.json()["title"] == "Hello <world>" and created.json()["repo"] == "aegis-demo"
    assert invalid.status_code == 422
    assert me.json()["login"] == "aegis-demo"


async def test_redirect_is_a_302_whose_target_counts_visits() -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t, httpx.AsyncClient(base_url=t.issuer) as c:
            resp = await c.get("demo-api/redirect")
            not_followed = t.stats.demo_redirect_followed
            await c.get(resp.headers["location"])
            followed = t.stats.demo_redirect_followed
    assert resp.status_code == 302
    assert resp.headers["location"] == t.issuer + "demo-api/redirected"
    assert (not_followed, followed) == (0, 1)

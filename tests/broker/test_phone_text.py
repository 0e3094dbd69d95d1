"""Issue 13 finding 2, end to end: two long repositories that used to read the same on the
phone get distinguishable pushes, and ``aegisctl pending`` shows their parameters whole.

The real stack (SDK → socket → daemon → dev tenant): the pushes are the texts the tenant
received on ``/bc-authorize``; the listing is the real ``aegisctl`` against the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from aegisd.client import AegisClient, Cancelled
from tests.corekit import AEGISCTL, child_env

from .conftest import Stack, wait_for_pending

OWNER = "acme-platform-engineering"
REPOS = ("infrastructure-terraform-production", "infrastructure-terraform-playground")


def github_delete(text: str) -> str:
    # the shipped examples/policies/github.toml template and patterns, against the demo API
    base = text.split('request.url = "', 1)[1].split("demo-api/", 1)[0]
    return (
        text
        + f"""
[actions."demo.delete_repo"]
approval = "ciba"
binding_message = "DELETE repo {{owner}}/{{repo}}"
params = {{ owner = "^[A-Za-z0-9-]{{1,39}}$", repo = "^[A-Za-z0-9._-]{{1,100}}$" }}
credential = {{ kind = "ciba_token" }}
request = {{ method = "GET", url = "{base}demo-api/repos" }}
"""
    )


async def test_two_long_repos_are_told_apart_and_listed_whole(
    make_stack: Callable[..., object],
) -> None:
    stack: Stack = await make_stack(edit=github_delete)  # type: ignore[misc]
    cancelled: list[str] = []
    with trio.fail_after(20):
        async with AegisClient(stack.socket) as c, trio.open_nursery() as n:

            async def ask(repo: str) -> None:
                try:
                    await c.proxy("demo.delete_repo", owner=OWNER, repo=repo)
                except Cancelled:
                    cancelled.append(repo)

            for repo in REPOS:
                n.start_soon(ask, repo)
            await wait_for_pending(stack.tenant, 2)
            texts = sorted(p.binding_message for p in stack.tenant.pending())
            listing = await trio.run_process(
                [str(AEGISCTL), "--socket", str(stack.socket), "pending"],
                capture_stdout=True,
                capture_stderr=True,
                env=child_env(),
                check=False,
            )
            await c.lock()
    assert len(set(texts)) == 2
    assert texts[0].startswith("DELETE repo acme-plat..ngineering:infrastruc..playground #")
    assert texts[1].startswith("DELETE repo acme-plat..ngineering:infrastruc..production #")
    out = listing.stdout.decode()
    assert listing.returncode == 0, listing.stderr
    assert out.count(f'    owner = "{OWNER}"') == 2
    for repo in REPOS:
        assert f'    repo  = "{repo}"' in out
    digests = [ln.split()[1] for ln in out.splitlines() if ln.startswith("    digest ")]
    assert sorted(d[:6] for d in digests) == sorted(t.rsplit("#", 1)[1] for t in texts)
    assert sorted(cancelled) == sorted(REPOS)

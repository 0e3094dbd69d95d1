"""SIGHUP reload seen from callers: atomic swap, pending approvals keep their policy,
remembered approvals of a changed action are forgotten, an invalid file changes nothing."""

from __future__ import annotations

import json

import pytest
import trio

from aegisd.client import AegisClient, UnknownAction

from .conftest import Stack, wait_for_pending

pytestmark = pytest.mark.usefixtures("make_stack")

T = 20

REMEMBER = '[actions."demo.token"]\nremember = { scope = "request", ttl = 60 }'


def rewrite(stack: Stack, old: str, new: str) -> None:
    path = stack.directory / "aegisd.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


async def test_pending_approval_finishes_under_the_policy_it_started_with(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            async with trio.open_nursery() as n:
                results = []

                async def ask() -> None:
                    results.append(await c.proxy("demo.delete", repo="scratch"))

                n.start_soon(ask)
                ids = await wait_for_pending(stack.tenant)
                # the new policy turns demo.delete into a harmless listing
                rewrite(stack, 'method = "DELETE"', 'method = "GET"')
                rewrite(
                    stack,
                    'url = "' + stack.tenant.issuer + 'demo-api/repos/{repo}"',
                    'url = "' + stack.tenant.issuer + 'demo-api/repos"',
                )
                assert await stack.daemon.reload()
                stack.tenant.approve(ids[0])
            # the approved request did what the person saw when approving: the delete
            assert json.loads(results[0].body) == {"deleted": "scratch", "by": stack.tenant.user_id}
            # a new request runs under the new policy
            async with trio.open_nursery() as n:
                n.start_soon(_approve_when_pending, stack)
                listing = await c.proxy("demo.delete", repo="aegis-demo")
            assert "aegis-demo" in listing.text()
    assert "reloaded" in stack.audit_events()


async def _approve_when_pending(stack: Stack) -> None:
    ids = await wait_for_pending(stack.tenant)
    stack.tenant.approve(ids[0])


async def test_reload_forgets_remembered_approvals_of_a_changed_action(make_stack) -> None:
    stack: Stack = await make_stack(edit=lambda t: t.replace('[actions."demo.token"]', REMEMBER))
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            async with trio.open_nursery() as n:
                n.start_soon(_approve_when_pending, stack)
                await c.authorize("demo.token")
            await c.authorize("demo.token")  # remembered: no second push
            assert stack.tenant.stats.bc_authorize_ok == 1
            rewrite(stack, "ttl = 60", "ttl = 30")
            assert await stack.daemon.reload()
            async with trio.open_nursery() as n:
                n.start_soon(_approve_when_pending, stack)
                await c.authorize("demo.token")
            assert stack.tenant.stats.bc_authorize_ok == 2
    reloaded = stack.audit_records("reloaded")[-1]
    assert reloaded["forgotten"] == 1 and reloaded["changed"] == ["demo.token"]


async def test_invalid_reload_keeps_the_old_policy(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            rewrite(stack, '[actions."demo.read"]', '[actions."demo.read"]\nbogus_key = 1')
            assert not await stack.daemon.reload()
            assert (await c.proxy("demo.read")).status == 200
            # a valid reload that removes the action takes effect at once
            path = stack.directory / "aegisd.toml"
            text = path.read_text().replace("bogus_key = 1\n", "")
            text = text.replace('[actions."demo.read"]', '[actions."demo.readonly"]')
            path.write_text(text)
            assert await stack.daemon.reload()
            with pytest.raises(UnknownAction):
                await c.proxy("demo.read")
    failed = stack.audit_records("reload_failed")
    assert failed and any("bogus_key" in p for p in failed[0]["problems"])  # type: ignore[union-attr]

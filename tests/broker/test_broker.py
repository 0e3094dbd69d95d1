"""The broker end to end: SDK → socket → daemon → dev tenant (real HTTP) → demo API.

Each test drives what a caller or the person on the phone would do and checks what they would
see: the API's answer, the error code, the number of pushes, the audit trail.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from aegisd.client import (
    AegisClient,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    CallerNotAllowed,
    Cancelled,
    CredentialUnavailable,
    InvalidParams,
    PendingEvent,
    PolicyDenied,
    RateLimited,
    UnknownAction,
    UpstreamError,
)
from aegisd.devtenant import DevTenantOptions
from tests.corekit import AEGISCTL, child_env

from .conftest import Stack, wait_for_pending

pytestmark = pytest.mark.usefixtures("make_stack")

T = 20  # seconds: an absolute bound on every test's I/O


async def approve_next(stack: Stack, n: int = 1) -> None:
    ids = await wait_for_pending(stack.tenant, n)
    stack.tenant.approve(ids[0])


async def test_approved_delete_goes_through_token_vault(make_stack) -> None:
    stack: Stack = await make_stack()
    events: list[PendingEvent] = []
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve_next, stack)
            result = await c.proxy("demo.delete", repo="scratch", on_pending=events.append)
    assert result.status == 200
    assert json.loads(result.body)["deleted"] == "scratch"
    # the person saw a message naming the repo and ending with the request digest
    assert len(events) == 1
    assert events[0].binding_message.startswith("Delete repo scratch #")
    assert events[0].binding_message.endswith(events[0].digest[:6])
    pending = stack.tenant  # one push only
    assert pending.stats.bc_authorize_ok == 1
    cred = stack.audit_records("credential")
    assert cred[0]["path"] == "token_vault" and cred[0]["connection"] == "github"
    assert [e for e in stack.audit_events() if e in ("pending", "approved", "proxied")] == [
        "pending",
        "approved",
        "proxied",
    ]
    approved = stack.audit_records("approved")[0]
    assert approved["sub"] == stack.tenant.user_id


async def test_denied_on_the_phone(make_stack) -> None:
    stack: Stack = await make_stack()

    async def deny() -> None:
        ids = await wait_for_pending(stack.tenant)
        stack.tenant.deny(ids[0])

    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(deny)
            with pytest.raises(ApprovalDenied):
                await c.proxy("demo.delete", repo="scratch")
    assert "denied" in stack.audit_events()
    # nothing was deleted
    async with AegisClient(stack.socket) as c:
        listing = await c.proxy("demo.read")
    assert "scratch" in listing.text()


async def test_expiry_is_reported_as_expired_not_denied(make_stack) -> None:
    stack: Stack = await make_stack(
        edit=lambda t: t.replace("requested_expiry = 120", "requested_expiry = 2")
    )
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            with pytest.raises(ApprovalExpired):
                await c.authorize("demo.token")
    assert "expired" in stack.audit_events()


async def test_cancel_withdraws_and_polling_stops(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            with trio.move_on_after(1.0):
                await c.authorize("demo.token")
            # give the daemon a moment to see Cancel, then count polls
            await trio.sleep(0.5)
            polls = stack.tenant.stats.total_polls
            await trio.sleep(1.0)
            assert stack.tenant.stats.total_polls == polls, "polling went on after cancel"
            assert stack.daemon.broker.pending_count == 0
    assert "withdrawn" in stack.audit_events()


async def test_disconnect_while_pending_withdraws(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with trio.open_nursery() as n:

            async def ask() -> None:
                async with AegisClient(stack.socket) as c:
                    await c.proxy("demo.delete", repo="scratch")

            n.start_soon(ask)
            await wait_for_pending(stack.tenant)
            n.cancel_scope.cancel()  # the caller vanishes mid-approval
        with trio.fail_after(5):
            while stack.daemon.broker.pending_count or "withdrawn" not in stack.audit_events():
                await trio.sleep(0.05)
    polls = stack.tenant.stats.total_polls
    await trio.sleep(0.6)
    assert stack.tenant.stats.total_polls == polls, "polling went on after the caller left"


async def test_vault_refusal_falls_back_to_management_api(make_stack) -> None:
    # without an audience the CIBA access token is opaque: aegisd does not offer it to Token Vault
    stack: Stack = await make_stack(
        DevTenantOptions(interval=0.2),
        edit=lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("audience")),
    )
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve_next, stack)
            result = await c.proxy("demo.delete", repo="old-experiments")
    assert result.status == 200
    assert stack.audit_records("credential")[0]["path"] == "management"
    assert stack.tenant.stats.token_vault_exchanges == 0  # an opaque token is never sent
    assert stack.tenant.stats.client_credentials == 1


async def test_fallback_without_identity_token_is_credential_unavailable(make_stack) -> None:
    stack: Stack = await make_stack(
        DevTenantOptions(interval=0.2, mgmt_identity_tokens=False),
        edit=lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("audience")),
    )
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve_next, stack)
            with pytest.raises(CredentialUnavailable):
                await c.proxy("demo.delete", repo="scratch")
    refused = stack.audit_records("refused")
    assert refused and refused[-1]["code"] == "credential_unavailable"


async def test_identical_requests_share_one_push_but_each_approval_is_single_use(
    make_stack,
) -> None:
    stack: Stack = await make_stack()
    results: list[object] = []
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:

            async def ask() -> None:
                results.append(await c.authorize("demo.token"))

            async with trio.open_nursery() as n:
                n.start_soon(ask)
                n.start_soon(ask)
                await wait_for_pending(stack.tenant)
                await trio.sleep(0.3)
                while not stack.daemon.broker.pending():
                    await trio.sleep(0.01)
                # two identical requests, one push
                assert stack.tenant.stats.bc_authorize_ok == 1
                assert stack.daemon.broker.pending()[0].waiters == 2
                stack.tenant.approve(stack.tenant.pending()[0].id)
                # the approval served one; the other needs a push of its own
                ids = await wait_for_pending(stack.tenant)
                assert stack.tenant.stats.bc_authorize_ok == 2
                stack.tenant.approve(ids[0])
    assert len(results) == 2
    assert results[0].access_token != results[1].access_token  # type: ignore[attr-defined]


async def test_remembered_approval_serves_identical_requests(make_stack) -> None:
    def remember(text: str) -> str:
        return text.replace(
            '[actions."demo.token"]',
            '[actions."demo.token"]\nremember = { scope = "request", ttl = 60 }',
        )

    stack: Stack = await make_stack(edit=remember)
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve_next, stack)
            first = await c.authorize("demo.token")
            second = await c.authorize("demo.token")  # within the TTL: no new push
            assert first.access_token == second.access_token
            assert stack.tenant.stats.bc_authorize_ok == 1
            locked = await c.lock()
            assert locked.forgotten == 1
            # after lock a new approval is needed again
            n.start_soon(approve_next, stack)
            await c.authorize("demo.token")
            assert stack.tenant.stats.bc_authorize_ok == 2
    assert "approval_reused" in stack.audit_events()


async def test_lock_cancels_pending_approvals(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c, AegisClient(stack.socket) as operator:
            async with trio.open_nursery() as n:

                async def ask() -> None:
                    with pytest.raises(Cancelled):
                        await c.authorize("demo.token")

                n.start_soon(ask)
                await wait_for_pending(stack.tenant)
                while not stack.daemon.broker.pending():
                    await trio.sleep(0.01)
                result = await operator.lock()
                assert result.cancelled == 1
    assert "lock" in stack.audit_events()


@pytest.mark.parametrize(
    ("action", "params", "error"),
    [
        ("demo.delete", {"repo": "../../etc"}, InvalidParams),
        ("demo.delete", {}, InvalidParams),
        ("demo.delete", {"repo": "ok", "extra": "x"}, InvalidParams),
        ("no.such", {}, UnknownAction),
        ("demo.forbidden", {}, PolicyDenied),
        ("demo.redirect", {}, UpstreamError),
    ],
)
async def test_refusals_have_the_right_code_and_are_audited(
    make_stack, action: str, params: dict[str, str], error: type[Exception]
) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            with pytest.raises(error):
                await c.proxy(action, **params)
    refused = stack.audit_records("refused")
    assert refused[-1]["code"] == error.code  # type: ignore[attr-defined]
    # a redirect is never followed
    assert stack.tenant.stats.demo_redirect_followed == 0
    # no push was sent for any refusal
    assert stack.tenant.stats.bc_authorize == 0


async def test_token_actions_and_proxy_actions_are_not_interchangeable(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            with pytest.raises(PolicyDenied):
                await c.authorize("demo.delete", repo="scratch")
            with pytest.raises(PolicyDenied):
                await c.proxy("demo.token")
    assert stack.tenant.stats.bc_authorize == 0


async def test_body_limits(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            ok = await c.proxy("demo.issue", repo="scratch", body='{"title": "hi"}')
            with pytest.raises(InvalidParams):
                await c.proxy("demo.issue", repo="scratch", body="x" * 65)
            with pytest.raises(InvalidParams):
                await c.proxy("demo.read", body="not accepted here")
    # no credential was attached to an approval-free action, so the API said who we are not
    assert ok.status in (201, 401)


async def test_caller_outside_its_rule(make_stack) -> None:
    stack: Stack = await make_stack(
        edit=lambda t: t.replace('actions = ["demo.*"]', 'actions = ["demo.read"]')
    )
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            names = [a.name for a in await c.list_actions()]
            assert names == ["demo.read"]
            with pytest.raises(CallerNotAllowed):
                await c.proxy("demo.delete", repo="scratch")


@pytest.mark.parametrize(
    ("per_caller", "pushes", "limit_named"),
    [(None, 3, "caller 'local-python'"), (5, 5, "approval requests per 60 s")],
)
async def test_rate_limit_stops_a_runaway_caller(
    make_stack, per_caller: int | None, pushes: int, limit_named: str
) -> None:
    # by default one caller gets 3 of the person's 5 pushes a minute; raised to 5, the
    # person's own limit is what refuses the sixth
    extra = f"\nciba_starts_per_minute_per_caller = {per_caller}" if per_caller else ""
    stack: Stack = await make_stack(edit=lambda t: t.replace("[daemon]", "[daemon]" + extra, 1))
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            async with trio.open_nursery() as n:
                for repo in ["a1", "a2", "a3", "a4", "a5"][:pushes]:
                    n.start_soon(_ignore_errors, c.proxy, "demo.delete", repo)
                await wait_for_pending(stack.tenant, pushes)
                with pytest.raises(RateLimited) as info:
                    await c.proxy("demo.delete", repo="a6")
                assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
                assert limit_named in info.value.message
                n.cancel_scope.cancel()
    assert stack.tenant.stats.bc_authorize_ok == pushes
    assert any(r["code"] == "rate_limited" for r in stack.audit_records("refused"))


async def _ignore_errors(fn, action: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(Exception):
        await fn(action, repo=repo)


CALLER_B = """
import sys, trio
from aegisd.client import AegisClient, RateLimited
async def main():
    async with AegisClient(sys.argv[1]) as c:
        print(c.peer.caller, flush=True)
        try:
            await c.authorize("demo.token")
        except Exception as e:
            print(type(e).__name__, flush=True)
trio.run(main)
"""


async def test_per_caller_cap_leaves_other_callers_their_pushes(make_stack) -> None:
    def two_callers(text: str) -> str:
        text = text.replace("max_pending_per_caller", "#")
        local = '[[callers]]\nname = "local-python"'
        head, tail = text.split(local, 1)
        rule_b = (local + tail).split("\n\n", 1)[0]
        rule_b = rule_b.replace('name = "local-python"', 'name = "caller-b"')
        rule_b += '\nargv = ["*aegis-caller-b*"]'
        text = head + rule_b + "\n\n" + local + tail
        return text.replace(
            "[daemon]", "[daemon]\nmax_pending_per_caller = 2\nciba_starts_per_minute = 50"
        )

    stack: Stack = await make_stack(
        DevTenantOptions(interval=0.2, ciba_per_user_per_minute=None), edit=two_callers
    )
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            assert c.peer is not None and c.peer.caller == "local-python"
            async with trio.open_nursery() as n:
                for repo in ["b1", "b2"]:
                    n.start_soon(_ignore_errors, c.proxy, "demo.delete", repo)
                await wait_for_pending(stack.tenant, 2)
                with pytest.raises(RateLimited):
                    await c.proxy("demo.delete", repo="b3")
                # another caller still gets its push
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-c", CALLER_B, str(stack.socket), "aegis-caller-b"],
                    stdout=subprocess.PIPE,
                )
                await wait_for_pending(stack.tenant, 3)
                while len(stack.daemon.broker.pending()) < 3:
                    await trio.sleep(0.01)
                assert stack.tenant.stats.bc_authorize_ok == 3
                callers = {p.caller for p in stack.daemon.broker.pending()}
                assert callers == {"local-python", "caller-b"}
                for pid in [p.id for p in stack.tenant.pending()]:
                    stack.tenant.deny(pid)
                await proc.wait()
                assert proc.stdout is not None
                out = (await proc.stdout.receive_some(4096)).decode().split()
                assert out == ["caller-b", "ApprovalDenied"]
                n.cancel_scope.cancel()


async def test_no_secret_or_token_reaches_disk(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            n.start_soon(approve_next, stack)
            await c.proxy("demo.delete", repo="scratch")
            n.start_soon(approve_next, stack)
            token = await c.authorize("demo.token")
    secrets = [s for s in stack.tenant.issued_secrets() if len(s) >= 8]
    assert token.access_token in secrets
    written = [p for p in stack.directory.rglob("*") if p.is_file() and p.name != "secrets.env"]
    assert any(p.name == "audit.jsonl" for p in written)
    for path in written:
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{path.name} contains an issued secret"
    assert not os.environ.get("AEGIS_SECRET_AUTH0_CLIENT_SECRET")


async def test_audit_chain_verifies_after_a_full_run(make_stack) -> None:
    from aegisd.daemon.audit import verify_files

    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:
            await c.proxy("demo.read")
            n.start_soon(approve_next, stack)
            await c.proxy("demo.delete", repo="scratch")
    result = verify_files(Path(stack.config.audit_path()))
    assert result.ok, result.problems
    assert result.records >= 6


THIEF = """
import sys, trio
from aegisd.client import AegisClient
async def main():
    async with AegisClient(sys.argv[1]) as c:
        try:
            await c.authorize("demo.token")
            print("Granted", flush=True)
        except Exception as e:
            print(type(e).__name__, flush=True)
trio.run(main)
"""


async def test_a_second_process_with_the_same_rule_cannot_take_the_approval(make_stack) -> None:
    # the review's finding: the identical request of another process used to join the push
    # and, about half the time, receive the credential the person approved for the first
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as victim, trio.open_nursery() as n:
            got: list[object] = []

            async def ask() -> None:
                got.append(await victim.authorize("demo.token"))

            n.start_soon(ask)
            first = (await wait_for_pending(stack.tenant, 1))[0]
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", THIEF, str(stack.socket)], stdout=subprocess.PIPE
            )
            await wait_for_pending(stack.tenant, 2)
            assert stack.tenant.stats.bc_authorize_ok == 2  # its own push, not the victim's
            stack.tenant.approve(first)
            while not got:
                await trio.sleep(0.02)
            for other in [p.id for p in stack.tenant.pending()]:
                stack.tenant.deny(other)
            await proc.wait()
            assert proc.stdout is not None
            assert (await proc.stdout.receive_some(4096)).decode().split() == ["ApprovalDenied"]
    assert stack.audit_records("delivered")[0]["pid"] == os.getpid()
    assert "coalesced" not in stack.audit_events()


async def test_an_approval_outlasts_max_wait_and_the_claim_collects_it(make_stack) -> None:
    stack: Stack = await make_stack()
    claim = os.urandom(32)
    with trio.fail_after(T):
        async with AegisClient(stack.socket) as c:
            with pytest.raises(ApprovalPending) as pending:
                await c.proxy("demo.delete", repo="scratch", claim=claim, max_wait=0.5)
            assert pending.value.expires_at is not None
            assert pending.value.expires_at > stack.tenant.pending()[0].expires_at - 5
        # the caller has gone (host timeout); the person approves a little later
        stack.tenant.approve((await wait_for_pending(stack.tenant))[0])
        while not stack.daemon.broker.pending() or (
            stack.daemon.broker.pending()[0].state != "approved"
        ):
            await trio.sleep(0.02)
        # the operator sees that approving again would do nothing: it waits for its requester
        shown = await trio.run_process(
            [str(AEGISCTL), "--socket", str(stack.socket), "pending"],
            capture_stdout=True,
            env=child_env(),
        )
        assert "approved, not yet collected" in shown.stdout.decode()
        async with AegisClient(stack.socket) as again:  # a new connection, the same claim
            result = await again.proxy("demo.delete", repo="scratch", claim=claim, max_wait=0.5)
    assert result.status == 200
    assert stack.tenant.stats.bc_authorize_ok == 1  # exactly one push
    events = stack.audit_events()
    assert events.index("detached") < events.index("approved") < events.index("reattached")
    assert events.index("reattached") < events.index("proxied")

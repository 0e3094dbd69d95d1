"""Approval ownership, detaching with ``max_wait``, holding and lock, on virtual time.

The Broker runs with a scripted Approver (the edge that stands for Auth0: a push is "answered"
when the test says so) and an in-memory audit, so each race can be placed exactly: a lock
between the answer and the claim, a lock while the credential is fetched, an approval nobody
comes back for.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from aegisd.auth0.tokens import Approval, CibaStart, Credential
from aegisd.config import CredentialSpec, parse_config
from aegisd.daemon.approvals import HOLD_GRACE, Approvals
from aegisd.daemon.broker import Broker, RequestContext
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import (
    AegisError,
    ApprovalDenied,
    ApprovalPending,
    BadRequest,
    Cancelled,
    RateLimited,
)
from aegisd.policy import Policy, compile_policy
from aegisd.wire import Authorize, DaemonMessage, Granted, Pending

POLICY = """
[auth0]
issuer = "http://127.0.0.1:1/"
allow_insecure_http = true
client_id = "aegis"
user_id = "auth0|person"

[[callers]]
name = "agent"
uids = [1000]
actions = ["t.*"]

[actions."t.token"]
approval = "ciba"
binding_message = "Token for {repo}"
params = { repo = "^[a-z]{1,10}$" }
credential = { kind = "ciba_token" }
delivery = "token"

[actions."t.remembered"]
approval = "ciba"
binding_message = "Remembered token"
credential = { kind = "ciba_token" }
delivery = "token"
remember = { scope = "request", ttl = 600 }
"""
EXPIRY = 120.0


class ScriptedApprover:
    """Pushes wait until the test answers them; credentials are counted."""

    def __init__(self) -> None:
        self.pushes: list[trio.Event] = []
        self.answers: list[Approval | AegisError] = []
        self.fetched = 0
        self.on_fetch: Callable[[], None] | None = None

    async def start_approval(self, **_: object) -> CibaStart:
        self.pushes.append(trio.Event())
        self.answers.append(ApprovalDenied())
        return CibaStart(
            auth_req_id=secrets.token_hex(8),
            expires_in=EXPIRY,
            interval=1.0,
            expires_at=trio.current_time() + EXPIRY,
            started_at=trio.current_time(),
        )

    async def wait_approval(self, start: CibaStart) -> Approval:
        i = len(self.pushes) - 1
        await self.pushes[i].wait()
        answer = self.answers[i]
        if isinstance(answer, AegisError):
            raise answer
        return answer

    def answer(self, i: int, approve: bool = True) -> None:
        if approve:
            self.answers[i] = Approval(
                access_token=f"ciba-token-{i}",
                id_token_claims={},
                refresh_token=None,
                expires_at=trio.current_time() + 600,
                scope="",
                sub="auth0|person",
                latency=0.0,
            )
        self.pushes[i].set()

    async def obtain_credential(self, spec: CredentialSpec, approval: Approval) -> Credential:
        self.fetched += 1
        if self.on_fetch is not None:
            self.on_fetch()
            await trio.sleep(0)
        return Credential(
            access_token=approval.access_token,
            token_type="Bearer",
            expires_at=approval.expires_at,
            scope="",
            kind=spec.kind,
            connection=None,
            path="ciba",
        )


class Harness:
    def __init__(self, approver: ScriptedApprover, broker: Broker, policy: Policy) -> None:
        self.approver = approver
        self.broker = broker
        self.policy = policy
        self.events: list[tuple[str, dict[str, object]]] = []

    def names(self) -> list[str]:
        return [e for e, _ in self.events]

    async def ask(
        self,
        pid: int = 4242,
        claim: bytes | None = None,
        start_time: int = 0,
        max_wait: float | None = None,
        action: str = "t.token",
        **params: str,
    ) -> tuple[Granted | None, list[DaemonMessage]]:
        sent: list[DaemonMessage] = []

        async def send(msg: DaemonMessage) -> None:
            sent.append(msg)

        ctx = RequestContext(
            conn_id=pid,
            peer=PeerIdentity(uid=1000, gid=1000, pid=pid, start_time=start_time),
            rule=self.policy.callers[0],
            send=send,
        )
        msg = Authorize(
            id=1,
            action=action,
            params=params or ({"repo": "scratch"} if action == "t.token" else {}),
            claim=claim,
            max_wait=max_wait,
        )
        await self.broker.handle(ctx, msg, self.policy)
        granted = [m for m in sent if isinstance(m, Granted)]
        return (granted[0] if granted else None), sent


@pytest.fixture
async def h(nursery: trio.Nursery) -> Harness:
    approver = ScriptedApprover()
    harness: Harness

    async def record(event: str, **fields: object) -> None:
        harness.events.append((event, fields))

    approvals = Approvals(
        approver=approver, record=record, now=trio.current_time, ciba_starts_per_minute=50
    )
    broker = Broker(approvals=approvals, record=record, http=httpx.AsyncClient())
    policy = compile_policy(parse_config(POLICY))
    harness = Harness(approver, broker, policy)
    await nursery.start(broker.serve)
    return harness


async def wait_pushes(h: Harness, n: int) -> None:
    while len(h.approver.pushes) < n:
        await trio.sleep(0.01)


async def run_bg(
    nursery: trio.Nursery, fn: Callable[[], Awaitable[object]]
) -> list[object | BaseException]:
    """Start ``fn`` in the background; the list gets its result or its exception."""
    out: list[object | BaseException] = []

    async def runner() -> None:
        try:
            out.append(await fn())
        except AegisError as exc:
            out.append(exc)

    nursery.start_soon(runner)
    return out


async def test_another_process_gets_its_own_push_and_never_the_victims_credential(
    h: Harness, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    victim = await run_bg(nursery, lambda: h.ask(pid=100))
    await wait_pushes(h, 1)
    thief = await run_bg(nursery, lambda: h.ask(pid=200))  # same rule, same action, same params
    await wait_pushes(h, 2)
    assert len(h.approver.pushes) == 2  # the thief did not join the victim's push
    h.approver.answer(0)  # the person approves the victim's push
    while not victim:
        await trio.sleep(0.01)
    granted, _ = victim[0]  # type: ignore[misc]
    assert granted.grant.access_token == "ciba-token-0"
    assert thief == []  # still waiting on its own push, which the person never approved
    h.approver.answer(1, approve=False)
    while not thief:
        await trio.sleep(0.01)
    assert isinstance(thief[0], ApprovalDenied)


async def test_same_process_identical_requests_still_share_one_push(
    h: Harness, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    a = await run_bg(nursery, lambda: h.ask(pid=100))
    b = await run_bg(nursery, lambda: h.ask(pid=100))
    await wait_pushes(h, 1)
    await trio.sleep(1)
    assert len(h.approver.pushes) == 1 and "coalesced" in h.names()
    h.approver.answer(0)
    await wait_pushes(h, 2)  # single use: the second waiter needs a push of its own
    h.approver.answer(1)
    while not (a and b):
        await trio.sleep(0.01)


async def test_a_new_process_on_a_reused_pid_is_not_the_owner(
    h: Harness, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    first = await run_bg(nursery, lambda: h.ask(pid=100, start_time=7))
    await wait_pushes(h, 1)
    later = await run_bg(nursery, lambda: h.ask(pid=100, start_time=9))  # same pid, reused
    with trio.fail_after(30):  # virtual time: joining the first push would never send one
        await wait_pushes(h, 2)
    assert "coalesced" not in h.names()
    h.approver.answer(0)
    while not first:
        await trio.sleep(0.01)
    assert later == []  # the first process's approval did not go to the newcomer
    h.approver.answer(1, approve=False)
    while not later:
        await trio.sleep(0.01)
    assert isinstance(later[0], ApprovalDenied)


async def test_max_wait_detaches_and_the_same_claim_reattaches_to_one_push(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    claim = secrets.token_bytes(32)
    with pytest.raises(ApprovalPending) as first:
        await h.ask(claim=claim, max_wait=45)
    assert first.value.expires_at is not None and first.value.retry_after is not None
    assert "Token for scratch" in first.value.message
    assert h.broker.pending()[0].waiters == 0  # kept alive with nobody waiting
    with pytest.raises(ApprovalPending):
        await h.ask(claim=claim, max_wait=45)  # still out: re-attached, no second push
    assert len(h.approver.pushes) == 1
    assert h.names().count("detached") == 2 and "reattached" in h.names()
    # the person approves while nobody waits: the approval is held, nothing is fetched
    h.approver.answer(0)
    while not h.broker.pending() or h.broker.pending()[0].state != "approved":
        await trio.sleep(0.01)
    assert h.approver.fetched == 0
    granted, sent = await h.ask(claim=claim, max_wait=45)
    assert granted is not None and granted.grant.access_token == "ciba-token-0"
    assert not any(isinstance(m, Pending) for m in sent)  # answered at once
    assert len(h.approver.pushes) == 1 and h.approver.fetched == 1
    assert h.broker.pending() == []


async def test_a_claim_cannot_be_replayed_by_someone_without_it(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    claim = secrets.token_bytes(32)
    with pytest.raises(ApprovalPending):
        await h.ask(claim=claim, max_wait=5)
    with pytest.raises(ApprovalPending):
        await h.ask(claim=secrets.token_bytes(32), max_wait=5)  # another claim: own push
    with pytest.raises(ApprovalPending):
        await h.ask(pid=999, claim=secrets.token_bytes(16), max_wait=5)  # another process
    assert len(h.approver.pushes) == 3
    h.approver.answer(0)
    await trio.sleep(1)
    # the held approval is only the first claim's
    with pytest.raises(ApprovalPending):
        await h.ask(claim=secrets.token_bytes(32), max_wait=1)
    assert h.approver.fetched == 0


async def test_denial_while_away_is_told_once_to_the_returning_requester(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    claim = secrets.token_bytes(32)
    with pytest.raises(ApprovalPending):
        await h.ask(claim=claim, max_wait=5)
    h.approver.answer(0, approve=False)
    await trio.sleep(1)
    with pytest.raises(ApprovalDenied):
        await h.ask(claim=claim, max_wait=5)  # not a second push to a person who said no
    assert len(h.approver.pushes) == 1


async def test_approval_nobody_collects_is_audited_and_its_credential_never_fetched(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ApprovalPending):
        await h.ask(claim=secrets.token_bytes(32), max_wait=5)
    h.approver.answer(0)
    await trio.sleep(EXPIRY + HOLD_GRACE + 1)
    assert "approved_not_collected" in h.names()
    assert h.approver.fetched == 0
    assert h.broker.pending() == [] and h.broker.pending_count == 0


async def test_cancel_after_detach_withdraws_the_push(
    h: Harness, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    claim = secrets.token_bytes(32)
    with pytest.raises(ApprovalPending):
        await h.ask(claim=claim, max_wait=5)
    with trio.move_on_after(2):  # the requester comes back, then the host cancels the call
        await h.ask(claim=claim, max_wait=60)
    await trio.sleep(1)
    assert h.broker.pending_count == 0 and "withdrawn" in h.names()


async def test_lock_between_the_answer_and_the_claim_voids_the_approval(
    h: Harness, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    waiter = await run_bg(nursery, lambda: h.ask(action="t.remembered"))
    await wait_pushes(h, 1)
    approved = h.events.__len__()
    # the lock lands after the poller recorded the approval, before the waiter resumes
    original = h.broker.approvals._record

    async def record_then_lock(event: str, **fields: object) -> None:
        await original(event, **fields)
        if event == "approved":
            h.broker.lock()

    h.broker.approvals._record = record_then_lock  # type: ignore[method-assign]
    h.approver.answer(0)
    while not waiter:
        await trio.sleep(0.01)
    assert isinstance(waiter[0], Cancelled), waiter
    assert h.approver.fetched == 0 and len(h.events) > approved
    # and nothing was remembered: the next identical request needs the person again
    again = await run_bg(nursery, lambda: h.ask(action="t.remembered"))
    await wait_pushes(h, 2)
    h.approver.answer(1)
    while not again:
        await trio.sleep(0.01)


async def test_lock_while_the_credential_is_fetched_delivers_nothing(
    h: Harness, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    h.approver.on_fetch = lambda: h.broker.lock()  # type: ignore[assignment,return-value]
    out = await run_bg(nursery, lambda: h.ask())
    await wait_pushes(h, 1)
    h.approver.answer(0)
    while not out:
        await trio.sleep(0.01)
    assert isinstance(out[0], Cancelled)
    assert "delivered" not in h.names()


async def test_max_wait_without_a_claim_or_with_a_short_claim_is_refused(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(BadRequest):
        await h.ask(max_wait=5)
    with pytest.raises(BadRequest):
        await h.ask(claim=b"short", max_wait=5)
    assert h.approver.pushes == []


async def test_one_caller_cannot_use_the_persons_whole_push_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    approver = ScriptedApprover()

    async def record(event: str, **fields: object) -> None:
        pass

    approvals = Approvals(approver=approver, record=record, now=trio.current_time)
    broker = Broker(approvals=approvals, record=record, http=httpx.AsyncClient())
    await nursery.start(broker.serve)
    h = Harness(approver, broker, compile_policy(parse_config(POLICY)))
    for repo in ["a", "b", "c"]:
        nursery.start_soon(lambda r=repo: h.ask(repo=r))  # type: ignore[misc]
    await wait_pushes(h, 3)
    with pytest.raises(RateLimited) as info:
        await h.ask(repo="d")
    assert "caller 'agent'" in info.value.message  # 3 of the person's 5 a minute
    assert len(approver.pushes) == 3
    for i in range(3):
        approver.answer(i)

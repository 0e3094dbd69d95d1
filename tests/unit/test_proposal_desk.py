"""ProposalDesk's own rules, with a scripted approver (the dev tenant runs the real flow in
tests/broker/test_proposal.py): nothing is applied unless approved, one proposal waits at a
time, and a turned agent cannot flood the phone with proposal pushes."""

from __future__ import annotations

import secrets

import pytest
import trio
import trio.testing

from aegisd.auth0.tokens import Approval, CibaStart
from aegisd.config import ActionSpec, Config, parse_config
from aegisd.daemon.peer import PeerIdentity
from aegisd.daemon.proposal import Applied, ProposalDesk
from aegisd.errors import ApprovalDenied, RateLimited
from aegisd.policy_text import render_policy
from aegisd.wire import Pending

BASE = parse_config(
    """
[daemon]
policy_file = "/nonexistent/policy.toml"

[[callers]]
name = "agent"
uids = [1000]
actions = ["t.*"]

[actions."t.read"]
approval = "none"
request = { url = "https://api.example/x" }
"""
)
PEER = PeerIdentity(uid=1000, gid=1000, pid=42)


class DenyingApprover:
    def __init__(self) -> None:
        self.pushes = 0
        self.release = trio.Event()

    async def start_approval(self, **_: object) -> CibaStart:
        self.pushes += 1
        now = trio.current_time()
        return CibaStart(
            auth_req_id=secrets.token_hex(8),
            expires_in=60,
            interval=1,
            expires_at=now + 60,
            started_at=now,
        )

    async def wait_approval(self, start: CibaStart) -> Approval:
        await self.release.wait()
        raise ApprovalDenied()

    async def obtain_credential(self, *_: object) -> object:  # pragma: no cover - unused
        raise AssertionError


def proposal(n: int) -> str:
    """The base policy plus one new (denied) action: a change worth a push."""
    return render_policy(BASE.callers, {**BASE.actions, f"t.new{n}": ActionSpec(approval="deny")})


async def noop_send(_: Pending) -> None:
    return None


async def never_apply(cfg: Config, sha: str) -> Applied:
    raise AssertionError("a denied proposal must not be applied")


async def no_record(event: str, **fields: object) -> None:
    return None


async def test_denied_proposals_are_never_applied_and_pushes_are_capped() -> None:
    approver = DenyingApprover()
    approver.release.set()
    desk = ProposalDesk(approver, no_record)
    for n in range(6):
        with pytest.raises(ApprovalDenied):
            await desk.propose(
                n, proposal(n), current=BASE, peer=PEER, send=noop_send, apply=never_apply
            )
    with pytest.raises(RateLimited, match="per 3600 s"):
        await desk.propose(
            7, proposal(7), current=BASE, peer=PEER, send=noop_send, apply=never_apply
        )
    assert approver.pushes == 6


async def test_one_proposal_waits_at_a_time() -> None:
    approver = DenyingApprover()
    desk = ProposalDesk(approver, no_record)
    async with trio.open_nursery() as nursery:

        async def first() -> None:
            with pytest.raises(ApprovalDenied):
                await desk.propose(
                    1, proposal(1), current=BASE, peer=PEER, send=noop_send, apply=never_apply
                )

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RateLimited, match="another policy proposal is waiting"):
            await desk.propose(
                2, proposal(2), current=BASE, peer=PEER, send=noop_send, apply=never_apply
            )
        approver.release.set()
    assert approver.pushes == 1

"""Who sees and cancels pending approvals (issue 13 finding 5), over the real socket.

On the reviewed main any same-uid process, even one no caller rule matches, could list every
pending approval with its text and cancel it. Now an approval is listed and cancellable only
for the process that asked for it and for an operator (aegisctl under an ``operator = true``
caller rule); a process no rule matches sees none and cannot cancel; ``lock`` stays open.

The stack is the dev tenant and the daemon in process (``conftest.make_stack``); every peer
is a process of its own: the requester (``REQUESTER``, an agent with a pending push), other
raw clients (``run_raw_client``) and the real ``aegisctl``. Caller rules tell them apart by
command line: ``*aegis-test-agent*`` for agents, ``*aegisctl*`` for the operator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import trio

from aegisd import wire
from tests.broker.conftest import Stack, wait_for_pending
from tests.corekit import child_env, run_ctl, run_raw_client

T = 30.0
AGENT = "aegis-test-agent"

CALLERS = f"""
[[callers]]
name = "operator"
argv = ["*aegisctl*"]
operator = true

[[callers]]
name = "agent"
argv = ["*{AGENT}*"]
actions = ["demo.*"]
"""

# An agent: says Hello, asks for demo.delete (a push to the phone), prints every message it
# gets as one JSON line, and sends a ListPending for each line read from its stdin.
REQUESTER = r"""
import socket, sys, threading
import msgspec
from aegisd import wire
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(wire.encode(wire.Hello(client="agent")))
s.sendall(wire.encode(wire.Proxy(id=1, action="demo.delete", params={"repo": sys.argv[2]})))
def ask():
    n = 100
    for _ in sys.stdin:
        n += 1
        s.sendall(wire.encode(wire.ListPending(id=n)))
threading.Thread(target=ask, daemon=True).start()
reader = wire.FrameReader()
while data := s.recv(65536):
    reader.feed(data)
    while (body := reader.next_frame()) is not None:
        print(msgspec.json.encode(wire.decode_daemon(body)).decode(), flush=True)
"""


def _with_callers(text: str) -> str:
    """The dev tenant's config with its caller rules replaced by CALLERS."""
    blocks = text.split("\n\n")
    kept = [b for b in blocks if not b.lstrip().startswith("[[callers]]")]
    first_action = next(i for i, b in enumerate(kept) if b.lstrip().startswith("[actions"))
    kept.insert(first_action, CALLERS.strip())
    return "\n\n".join(kept)


@dataclass
class Requester:
    proc: trio.Process
    lines: list[str]

    async def message(self, kind: str) -> dict[str, object]:
        """The next message of type ``kind`` the agent received."""
        assert self.proc.stdout is not None
        buf = b""
        with trio.move_on_after(T):
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    self.lines.append(line.decode())
                    if msg["type"] == kind:
                        return dict(msg)
                data = await self.proc.stdout.receive_some(65536)
                assert data, f"agent exited; it got {self.lines}"
                buf += data
        raise AssertionError(f"no {kind} within {T} s; the agent got {self.lines}")

    async def list_own(self) -> dict[str, object]:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"list\n")
        return await self.message("pending_list")


@pytest.fixture
async def agent(make_stack: Callable[..., object]) -> AsyncIterator[tuple[Stack, Requester]]:
    """A stack whose agent (another process) has one push out: demo.delete repo victim."""
    stack = await make_stack(edit=_with_callers)  # type: ignore[misc]
    argv = [sys.executable, "-c", REQUESTER, str(stack.socket), "victim", AGENT]
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
    )
    requester = Requester(proc, [])
    try:
        await requester.message("pending")
        await wait_for_pending(stack.tenant)
        yield stack, requester
    finally:
        proc.kill()
        await proc.wait()


async def _raw(stack: Stack, *messages: wire.ClientMessage, marker: str = "") -> list[object]:
    """Hello then ``messages`` from a separate process; every answer after the Welcome."""
    run = await trio.to_thread.run_sync(
        lambda: run_raw_client(
            stack.socket,
            [wire.Hello(client="other"), *messages],
            want=1 + len(messages),
            marker=[marker] if marker else [],
        )
    )
    assert run.outcome == "OK", run
    assert isinstance(run.messages[0], wire.Welcome)
    return list(run.messages[1:])


def _only_pending_id(stack: Stack) -> str:
    (info,) = stack.daemon.broker.pending()
    return info.pending_id


async def test_an_unmatched_process_cannot_list_or_cancel_pending_approvals(agent) -> None:
    stack, _requester = agent
    victim = _only_pending_id(stack)
    listing, refusal = await _raw(
        stack, wire.ListPending(id=1), wire.CancelPending(id=2, pending_id=victim)
    )
    assert isinstance(listing, wire.PendingList)
    assert (listing.pending, listing.scope) == ([], "none")
    assert "operator = true" in listing.note
    assert isinstance(refusal, wire.Error) and refusal.code == "peer_rejected"
    assert "lock" in refusal.message  # it is told what it may do instead
    # the push is still out, for the agent that asked
    assert [p.pending_id for p in stack.daemon.broker.pending()] == [victim]
    assert len(stack.tenant.pending()) == 1
    assert stack.audit_records("refused")[-1]["request"] == "cancel_pending"


async def test_a_caller_sees_and_cancels_only_its_own_pending_approvals(agent) -> None:
    stack, requester = agent
    victim = _only_pending_id(stack)
    # another process under the same caller rule: nothing to see, nothing to cancel
    listing, refusal = await _raw(
        stack,
        wire.ListPending(id=1),
        wire.CancelPending(id=2, pending_id=victim),
        marker=AGENT,
    )
    assert isinstance(listing, wire.PendingList)
    assert (listing.pending, listing.scope) == ([], "own")
    assert isinstance(refusal, wire.Error) and refusal.code == "not_found"
    assert [p.pending_id for p in stack.daemon.broker.pending()] == [victim]
    # the process that asked sees its approval, whole
    own = await requester.list_own()
    assert own["scope"] == "own"
    (item,) = own["pending"]  # type: ignore[misc]
    assert (item["pending_id"], item["params"]) == (victim, {"repo": "victim"})


async def test_the_operator_sees_and_cancels_every_pending_approval(agent) -> None:
    stack, requester = agent
    victim = _only_pending_id(stack)
    listed = await trio.to_thread.run_sync(
        lambda: run_ctl(None, "pending", "--json", socket_path=stack.socket)
    )
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    assert out["scope"] == "all"
    assert [(p["pending_id"], p["caller"]) for p in out["pending"]] == [(victim, "agent")]
    cancelled = await trio.to_thread.run_sync(
        lambda: run_ctl(None, "cancel", victim, socket_path=stack.socket)
    )
    assert cancelled.returncode == 0, cancelled.stderr
    error = await requester.message("error")
    assert error["code"] == "cancelled" and error["id"] == 1
    record = stack.audit_records("operator_cancel")[-1]
    assert (record["caller"], record["scope"], record["pending_id"]) == ("operator", "all", victim)


async def test_lock_still_works_for_a_process_no_rule_matches(agent) -> None:
    stack, requester = agent
    (locked,) = await _raw(stack, wire.Lock(id=1))
    assert isinstance(locked, wire.Locked) and locked.cancelled == 1
    error = await requester.message("error")
    assert error["code"] == "cancelled"
    assert stack.daemon.broker.pending() == []


async def test_aegisctl_says_when_it_sees_only_part(make_stack) -> None:
    # an operator rule that misses aegisctl: it matches no rule and says why the list is empty
    stack = await make_stack(
        edit=lambda t: _with_callers(t).replace('"*aegisctl*"', '"*no-such-program*"')
    )
    done = await trio.to_thread.run_sync(lambda: run_ctl(None, "pending", socket_path=stack.socket))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none of yours pending"
    assert "no caller rule matches this process" in done.stderr

"""Connection exhaustion (issue 13 finding 7) against a real daemon process and real peers.

On the reviewed main, 256 idle connections of one process locked a real client out for up to
ten minutes. Now: one process holds at most ``max_connections_per_peer`` connections, one uid
at most ``max_connections_per_uid``, a peer no caller rule matches is closed after the short
``unmatched_idle_timeout``, and at the total cap the longest-idle unmatched connection is
evicted for a newcomer. Peers are separate processes (``HOLD``) or this test process, told
apart by caller rules on the command line (``argv`` globs over a marker word).

Synchronous tests with blocking sockets; every socket and subprocess has a timeout.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aegisd import wire
from tests.corekit import (
    CLIENT_EXE,
    DaemonProcess,
    Files,
    RawClient,
    child_env,
    run_raw_client,
    wait_for,
)

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]

MARK = "aegis-test-agent"
# matched: a process whose command line carries MARK; this test process does not
AGENT_RULE: dict[str, object] = {
    "name": "agent",
    "exe": [CLIENT_EXE],
    "argv": [f"*{MARK}*"],
    "actions": ["demo.*"],
}
EVERYONE_RULE: dict[str, object] = {"name": "tests", "exe": [CLIENT_EXE], "actions": ["demo.*"]}

# Opens N connections, says Hello on each, prints one line per connection ("welcome", or
# "error CODE" / "closed"), then keeps the welcomed ones open until its stdin closes.
HOLD = r"""
import socket, sys
from aegisd import wire
path, n = sys.argv[1], int(sys.argv[2])
kept = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(wire.encode(wire.Hello(client="hold")))
    reader = wire.FrameReader()
    msg = None
    while msg is None:
        data = s.recv(65536)
        if not data:
            break
        reader.feed(data)
        body = reader.next_frame()
        if body is not None:
            msg = wire.decode_daemon(body)
    if isinstance(msg, wire.Welcome):
        print("welcome", flush=True)
        kept.append(s)
    else:
        print("error " + msg.code if isinstance(msg, wire.Error) else "closed", flush=True)
        s.close()
sys.stdin.read()
"""


@contextmanager
def hold(sock: Path, n: int, *, marker: str = "") -> Iterator[list[str]]:
    """A separate process holding up to ``n`` idle connections; yields each one's outcome."""
    argv = [sys.executable, "-c", HOLD, str(sock), str(n), marker or "-"]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            outcomes = [proc.stdout.readline().strip() for _ in range(n)]
            assert all(outcomes), f"holder died: {outcomes}"
            yield outcomes
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def served(sock: Path, *, marker: str = "") -> wire.DaemonMessage:
    """A fresh process connects and asks Status: the answer (StatusReport when served)."""
    run = run_raw_client(
        sock,
        [wire.Hello(client="late"), wire.Status(id=1)],
        want=2,
        marker=[marker] if marker else [],
    )
    assert run.messages, run.outcome
    return run.messages[-1]


def until_closed(c: RawClient) -> list[wire.DaemonMessage]:
    out: list[wire.DaemonMessage] = []
    try:
        while (msg := c.recv()) is not None:
            out.append(msg)
    except ConnectionResetError:
        pass
    return out


def test_idle_connections_of_one_process_cannot_lock_out_a_caller(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(
        write_config(callers=[EVERYONE_RULE], max_connections=6, max_connections_per_peer=3)
    )
    with hold(d.files.socket, 8, marker=MARK) as outcomes:
        # one process gets its share; the rest is refused with a typed error, at once
        assert outcomes == ["welcome"] * 3 + ["error rate_limited"] * 5
        answer = served(d.files.socket)
        assert isinstance(answer, wire.StatusReport), answer
        # the refusal names the limit, so the operator knows what to raise
        with RawClient(d.files.socket) as a, RawClient(d.files.socket) as b:
            a.hello()
            b.hello()
            with RawClient(d.files.socket) as c, RawClient(d.files.socket) as extra:
                c.hello()
                (err,) = until_closed(extra)
        assert isinstance(err, wire.Error) and err.code == "rate_limited", err
        assert "max_connections_per_peer" in err.message and err.retry_after == 1.0
    d.assert_no_crash()


def test_one_uid_is_capped_across_its_processes(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(
        write_config(
            callers=[EVERYONE_RULE],
            max_connections=20,
            max_connections_per_peer=2,
            max_connections_per_uid=3,
        )
    )
    with hold(d.files.socket, 2) as first, hold(d.files.socket, 2) as second:
        assert first == ["welcome", "welcome"]
        assert second == ["welcome", "error rate_limited"]  # the uid's third and fourth
        answer = served(d.files.socket)
        assert isinstance(answer, wire.Error) and answer.code == "rate_limited", answer
        assert "max_connections_per_uid" in answer.message
    # the slots come back when the processes leave
    wait_for(lambda: isinstance(served(d.files.socket), wire.StatusReport), what="a free slot")
    d.assert_no_crash()


def test_unmatched_idle_connections_time_out_quickly(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(
        write_config(callers=[AGENT_RULE], idle_timeout=600.0, unmatched_idle_timeout=0.5)
    )
    with RawClient(d.files.socket) as unmatched:
        welcome = unmatched.hello()
        assert welcome.peer.caller is None
        # a Watch in flight does not keep an unmatched peer's slot either
        unmatched.send(wire.Watch(id=1))
        assert isinstance(unmatched.recv(), wire.PolicyChanged)
        t0 = time.monotonic()
        # meanwhile a matched caller idles longer than that and is still connected
        matched = run_raw_client(
            d.files.socket, [wire.Hello(client="agent")], want=2, marker=[MARK], timeout=1.5
        )
        assert matched.outcome == "TIMEOUT" and isinstance(matched.messages[0], wire.Welcome)
        assert until_closed(unmatched) == []
        assert time.monotonic() - t0 < 4.0
    d.assert_no_crash()


def test_an_idle_unmatched_connection_is_evicted_for_a_matched_caller(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(write_config(callers=[AGENT_RULE], max_connections=3))
    sock = d.files.socket
    with RawClient(sock) as old, RawClient(sock) as mid, RawClient(sock) as new:
        for c in (old, mid, new):
            c.hello()  # three unmatched, idle: the daemon is full
            time.sleep(0.05)  # a distinct idle age each
        new.status()  # ``new`` was active last, ``old`` has idled longest
        mid.status()
        answer = served(sock, marker=MARK)
        assert isinstance(answer, wire.StatusReport), answer
        (err,) = until_closed(old)
        assert isinstance(err, wire.Error) and err.code == "rate_limited", err
        assert "idle" in err.message
        assert mid.status().pid == d.pid and new.status().pid == d.pid
    d.assert_no_crash()

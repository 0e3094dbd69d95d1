"""Hostile and broken clients against a real daemon process.

Every bad frame gets the right error code and its connection closes; the daemon keeps serving
everyone else (a Status round trip on a fresh connection after each case), leaks no file
descriptors, drops silent clients, and answers ``rate_limited`` at its connection cap instead
of hanging. The daemon's stderr must never show a traceback or a crashed connection.

These are synchronous tests with blocking sockets: every socket has a timeout, so a hang
fails the test instead of freezing the run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aegisd import wire
from aegisd.client import BlockingAegisClient, RateLimited
from aegisd.errors import BadRequest
from tests.corekit import (
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    fd_count,
    short_root,
    status_roundtrip,
    wait_for,
    wait_for_record,
)
from tests.corekit import write_config as write_config_at

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    with short_root() as root:
        d = DaemonProcess(write_config_at(root))
        try:
            yield d.start()
        finally:
            d.cleanup()


@pytest.fixture
def daemon(shared_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    """The shared daemon; each test must leave its log free of crashes."""
    shared_daemon.mark()
    yield shared_daemon
    shared_daemon.assert_no_crash()


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def until_closed(c: RawClient) -> list[wire.DaemonMessage]:
    """Everything the daemon sends before it closes; a reset counts as closed."""
    out: list[wire.DaemonMessage] = []
    try:
        while (msg := c.recv()) is not None:
            out.append(msg)
    except ConnectionResetError:
        pass
    return out


def still_serving(d: DaemonProcess) -> None:
    assert status_roundtrip(d.files.socket).pid == d.pid


# ---- hand-made frames -----------------------------------------------------------------------

PACK = msgspec.msgpack.encode
BEFORE_HELLO = {
    "request before Hello": (wire.encode(wire.Status(id=1)), "bad_request"),
    "garbage msgpack": (frame(b"\xc1\xc1\xc1"), "bad_request"),
    "empty frame": (frame(b""), "bad_request"),
    "oversized announcement": (struct.pack(">I", 0xFFFFFFFF), "frame_too_large"),
    "just over 64 KiB": (struct.pack(">I", wire.MAX_FRAME + 1) + b"\0" * 100, "frame_too_large"),
    "unknown type tag": (frame(PACK({"type": "format_disk", "id": 1})), "bad_request"),
    "no type tag": (frame(PACK({"protocol": "1.0"})), "bad_request"),
    "wrong type": (frame(PACK({"type": "hello", "protocol": 1})), "bad_request"),
    "not a map": (frame(PACK(["hello", "1.0"])), "bad_request"),
    "major protocol 2": (wire.encode(wire.Hello(protocol="2.0")), "unsupported_protocol"),
    "empty protocol": (wire.encode(wire.Hello(protocol="")), "unsupported_protocol"),
    "daemon's own message": (
        wire.encode(
            wire.Welcome(protocol="1.0", daemon_version="x", peer=wire.PeerInfo(uid=0, pid=1))
        ),
        "bad_request",
    ),
}

AFTER_HELLO = {
    "second Hello": (wire.encode(wire.Hello()), "bad_request"),
    "garbage msgpack": (frame(b"\x92\xc1"), "bad_request"),
    "oversized announcement": (struct.pack(">I", 10 * wire.MAX_FRAME), "frame_too_large"),
    "unknown type tag": (frame(PACK({"type": "sudo", "id": 1})), "bad_request"),
    "wrong type": (frame(PACK({"type": "status", "id": "one"})), "bad_request"),
    "params not strings": (
        frame(PACK({"type": "authorize", "id": 1, "action": "demo.read", "params": {"repo": 7}})),
        "bad_request",
    ),
    "missing field": (frame(PACK({"type": "cancel_pending", "id": 1})), "bad_request"),
}


@pytest.mark.parametrize(("data", "code"), BEFORE_HELLO.values(), ids=BEFORE_HELLO.keys())
def test_bad_frame_before_hello(daemon: DaemonProcess, data: bytes, code: str) -> None:
    with RawClient(daemon.files.socket) as c:
        c.send_raw(data)
        got = until_closed(c)
    assert len(got) == 1, got
    (err,) = got
    assert isinstance(err, wire.Error) and err.code == code and err.id is None
    still_serving(daemon)


@pytest.mark.parametrize(("data", "code"), AFTER_HELLO.values(), ids=AFTER_HELLO.keys())
def test_bad_frame_after_hello(daemon: DaemonProcess, data: bytes, code: str) -> None:
    with RawClient(daemon.files.socket) as c:
        c.hello()
        c.send_raw(data)
        got = until_closed(c)
    assert len(got) == 1, got
    (err,) = got
    assert isinstance(err, wire.Error) and err.code == code
    still_serving(daemon)


def test_unsupported_protocol_says_which_versions(daemon: DaemonProcess) -> None:
    with RawClient(daemon.files.socket) as c:
        c.send(wire.Hello(protocol="2.0"))
        (err,) = until_closed(c)
    assert err == wire.Error(
        code="unsupported_protocol", message="daemon speaks protocol 1.0, client sent '2.0'"
    )


def test_newer_minor_protocol_is_welcomed(daemon: DaemonProcess) -> None:
    with RawClient(daemon.files.socket) as c:
        assert c.hello(protocol="1.7").protocol == "1.0"
        assert c.status().pid == daemon.pid


@pytest.mark.parametrize(
    "data",
    [b"\0\0", struct.pack(">I", 100) + b"0123456789"],
    ids=["truncated header", "truncated body"],
)
def test_truncated_frame_then_eof_closes_quietly(daemon: DaemonProcess, data: bytes) -> None:
    with RawClient(daemon.files.socket) as c:
        c.send_raw(data)
        c.sock.shutdown(socket.SHUT_WR)
        assert until_closed(c) == []
    still_serving(daemon)
    daemon.assert_no_crash()


def test_client_leaving_before_its_answer_is_no_crash(daemon: DaemonProcess) -> None:
    def disconnects() -> int:
        return sum(r["event"] == "disconnect" for r in audit_records(daemon.files.audit))

    before = disconnects()
    for _ in range(30):
        with RawClient(daemon.files.socket) as c:
            c.hello()
            c.send(wire.Status(id=1))  # and leave without reading the answer
    for _ in range(5):
        RawClient(daemon.files.socket).close()  # connect and leave before Hello
    wait_for(lambda: disconnects() >= before + 35, what="35 disconnect records")
    still_serving(daemon)
    daemon.assert_no_crash()


def test_requests_on_one_connection_after_an_error_answer_keep_working(
    daemon: DaemonProcess,
) -> None:
    with RawClient(daemon.files.socket) as c:
        c.hello()
        err = c.ask(wire.Authorize(id=5, action="no.such", params={}))
        assert err == wire.Error(id=5, code="unknown_action", message="no action named 'no.such'")
        err = c.ask(wire.Authorize(id=6, action="demo.read", params={"repo": "../etc"}))
        assert isinstance(err, wire.Error) and (err.id, err.code) == (6, "invalid_params")
        assert c.status().pid == daemon.pid


# ---- generated frames -----------------------------------------------------------------------

# One daemon serves every example on purpose: it must survive all of them.
HYPO = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TAGS = ["hello", "authorize", "proxy", "cancel", "list_actions", "status", "list_pending"]
TAGS += ["cancel_pending", "lock", "welcome", "error", "nope"]
shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(TAGS)},
    optional={
        k: msgpack_values for k in ("id", "action", "params", "protocol", "pending_id", "body")
    },
)


@HYPO
@given(data=st.binary(max_size=300))
def test_random_bytes_get_an_error_or_nothing(daemon: DaemonProcess, data: bytes) -> None:
    with RawClient(daemon.files.socket) as c:
        c.send_raw(data)
        c.sock.shutdown(socket.SHUT_WR)  # so an incomplete frame ends in EOF, not a timeout
        got = until_closed(c)
    assert len(got) <= 1
    for msg in got:
        assert isinstance(msg, wire.Error)
        assert msg.code in ("bad_request", "frame_too_large")
    still_serving(daemon)


@HYPO
@given(value=shaped | msgpack_values)
def test_wrongly_shaped_messages_get_bad_request(daemon: DaemonProcess, value: object) -> None:
    body = PACK(value)
    try:
        wire.decode_client(body)
    except BadRequest:
        pass
    else:
        assume(False)  # a valid message by chance: not what this test is about
    with RawClient(daemon.files.socket) as c:
        c.hello()
        c.send_raw(frame(body))
        got = until_closed(c)
    assert len(got) == 1 and isinstance(got[0], wire.Error), got
    assert got[0].code == "bad_request"
    still_serving(daemon)


@HYPO
@given(protocol=st.text(max_size=12))
def test_hello_protocol_decides_welcome_or_refusal(daemon: DaemonProcess, protocol: str) -> None:
    with RawClient(daemon.files.socket) as c:
        c.send(wire.Hello(protocol=protocol))
        first = c.recv()
        if protocol.split(".", 1)[0] == "1":
            assert isinstance(first, wire.Welcome)
            assert c.status().pid == daemon.pid
        else:
            assert isinstance(first, wire.Error) and first.code == "unsupported_protocol"
            assert until_closed(c) == []


# ---- resources ------------------------------------------------------------------------------


def test_no_fd_leak_after_1000_connections(daemon: DaemonProcess) -> None:
    sock = daemon.files.socket
    still_serving(daemon)
    before = fd_count(daemon.pid)
    for i in range(1000):
        with RawClient(sock) as c:
            match i % 4:
                case 0:
                    c.hello()
                    c.status()
                case 1:
                    c.send_raw(frame(b"\xc1"))
                    until_closed(c)
                case 2:
                    pass  # connect and leave
                case _:
                    c.hello()
    # the daemon closes its ends asynchronously: wait for the count to settle
    wait_for(lambda: fd_count(daemon.pid) <= before + 2, timeout=10, what="fds to be released")
    still_serving(daemon)


def test_a_client_that_never_reads_does_not_block_others(daemon: DaemonProcess) -> None:
    with RawClient(daemon.files.socket) as flood:
        flood.hello()
        burst = b"".join(wire.encode(wire.Status(id=i)) for i in range(1, 3000))
        flood.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # buffers full: the situation we want
            flood.sock.sendall(burst)
        t0 = time.monotonic()
        still_serving(daemon)
        assert time.monotonic() - t0 < 2.0
    still_serving(daemon)


# ---- timeouts and the connection cap ----------------------------------------------------------


def test_silent_and_stalled_clients_are_dropped(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(write_config(handshake_timeout=0.5, idle_timeout=0.5))
    sock = d.files.socket
    with RawClient(sock) as silent, RawClient(sock) as stalled, RawClient(sock) as idle:
        stalled.send_raw(struct.pack(">I", 100) + b"partial")
        idle.hello()
        t0 = time.monotonic()
        still_serving(d)  # served while the others hang around
        assert until_closed(silent) == []
        assert until_closed(stalled) == []
        assert until_closed(idle) == []
        assert 0.3 < time.monotonic() - t0 < 4.0
    reasons = {"handshake timeout", "idle"}
    wait_for(
        lambda: (
            reasons
            <= {
                str(r.get("reason"))
                for r in audit_records(d.files.audit)
                if r["event"] == "disconnect"
            }
        ),
        what="disconnect records",
    )
    d.assert_no_crash()


def test_connection_cap_answers_rate_limited(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(write_config(max_connections=2))
    sock = d.files.socket
    with RawClient(sock) as a, RawClient(sock) as b:
        a.hello()
        b.hello()
        with RawClient(sock) as extra:
            (err,) = until_closed(extra)
        assert isinstance(err, wire.Error)
        assert (err.code, err.retry_after) == ("rate_limited", 1.0)
        a.close()
        wait_for(lambda: _welcomed(sock), what="a free slot after a client left")
        assert b.status().pid == d.pid
    d.assert_no_crash()


def test_sdk_over_the_cap_gets_rate_limited_not_daemon_unavailable(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(write_config(max_connections=1))
    with RawClient(d.files.socket) as holder:
        holder.hello()
        outcomes = []
        for _ in range(30):
            try:
                BlockingAegisClient(d.files.socket).status()
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes == [RateLimited.__name__] * 30


def _welcomed(sock: Path) -> bool:
    try:
        with RawClient(sock) as c:
            c.send(wire.Hello())
            return isinstance(c.recv(), wire.Welcome)
    except (ConnectionResetError, BrokenPipeError):
        return False


def test_rejections_are_audited(daemon: DaemonProcess) -> None:
    with RawClient(daemon.files.socket) as c:
        c.hello()
        c.ask(wire.Authorize(id=9, action="no.such", params={}))
    rec = wait_for_record(
        daemon.files.audit, lambda r: r["event"] == "refused" and r.get("request") == 9
    )
    assert rec["code"] == "unknown_action"


def test_sequential_short_connections_never_hit_the_cap(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    # One client, one connection at a time, as fast as it can (a script calling aegisctl in
    # a loop does the same). Closed connections must not pile up against max_connections.
    d = spawn_daemon(write_config(max_connections=64))
    for i in range(1500):
        with RawClient(d.files.socket) as c:
            answer = c.ask(wire.Hello())
            assert isinstance(answer, wire.Welcome), f"connection {i}: {answer}"

"""A hostile client in its own process: fuzzed frames, then connection churn, against aegisd.

Run by ``test_abuse.py`` (``python -m tests.proof.fuzzer SOCKET FRAMES CHURNS SEED [RATE]``,
RATE in events a second, 0 or absent for as fast as it can) so that
its CPU use is not the test's own and the test's latency probe measures the daemon. Prints one
JSON line of counts at the end; exits non-zero only if the daemon became unreachable.

Frames (seeded, reproducible), each followed by a valid ``Status`` so every frame costs one
round trip and its effect is visible (an ``Error`` and a close, or the Status answer):

* random bytes as a first message (no Hello), or after a valid Hello;
* a correct length header around a random body;
* a valid client message with 1-3 body bytes flipped, or with trailing junk;
* a msgpack map with a known ``type`` tag and wrongly typed or unknown fields;
* a header announcing more than 64 KiB; a frame cut short before the connection closes;
* Hellos with odd protocol strings; valid requests (Status, ListPending, Cancel of unknown ids,
  Proxy of unknown actions with odd parameters).

Churn: connect and close at once; connect, Hello, close; connect, Hello, Status, close; and
abortive closes (RST, ``SO_LINGER`` 0) at each of those points.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time
from collections import Counter

import msgspec

from aegisd import wire

_HDR = struct.Struct(">I")
STALL_SECONDS = 0.5
_TAGS = [
    "hello",
    "authorize",
    "proxy",
    "cancel",
    "list_actions",
    "status",
    "list_pending",
    "cancel_pending",
    "lock",
    "welcome",
    "nope",
]
_ODD: list[object] = [
    None,
    True,
    -1,
    2**63,
    1.5,
    "",
    "x" * 300,
    b"\x00\xff",
    [],
    {},
    {"a": [1, {"b": None}]},
    "../../etc/passwd",
    "\u202e",
]


def frame(body: bytes) -> bytes:
    return _HDR.pack(len(body)) + body


def valid_message(rng: random.Random) -> wire.ClientMessage:
    i = rng.randint(0, 2**31)
    choices: list[wire.ClientMessage] = [
        wire.Status(id=i),
        wire.ListPending(id=i),
        wire.Cancel(id=i),
        wire.ListActions(id=i),
        wire.Proxy(id=i, action=rng.choice(["demo.read", "nope", "x" * 200]), params={"repo": "a"}),
        wire.Authorize(id=i, action="demo.read", params={"repo": "x" * rng.randint(0, 50)}),
        wire.CancelPending(id=i, pending_id="deadbeef"),
    ]
    return rng.choice(choices)


def fuzz_payload(rng: random.Random) -> tuple[bool, bytes]:
    """(send a Hello first?, bytes to send)."""
    kind = rng.randrange(10)
    if kind == 0:  # junk instead of a Hello
        return False, rng.randbytes(rng.randint(1, 200))
    if kind == 1:  # junk after a Hello
        return True, rng.randbytes(rng.randint(1, 200))
    if kind == 2:  # a correct header, random body
        return True, frame(rng.randbytes(rng.randint(0, 300)))
    if kind == 3:  # a valid message with body bytes flipped (the header stays true)
        data = bytearray(wire.encode(valid_message(rng)))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        return True, bytes(data)
    if kind == 4:  # a valid message with trailing junk (the next "frame" is garbage)
        data = wire.encode(valid_message(rng))
        return True, data + rng.randbytes(rng.randint(1, 40))
    if kind == 5:  # known tag, wrong field types
        body: dict[str, object] = {"type": rng.choice(_TAGS)}
        for key in rng.sample(
            ["id", "action", "params", "body", "protocol", "pending_id", "zz"], 3
        ):
            body[key] = rng.choice(_ODD)
        return True, frame(msgspec.msgpack.encode(body))
    if kind == 6:  # oversized header
        return True, _HDR.pack(rng.randint(wire.MAX_FRAME + 1, 2**32 - 1)) + b"\0" * 8
    if kind == 7:  # odd Hello
        proto = rng.choice(["", "2.0", "1", "1.999", "x" * 100, "0.1", "\x00"])
        return False, wire.encode(wire.Hello(protocol=proto, client=rng.choice(["", "z" * 50])))
    # valid requests with odd parameters: these keep the connection open
    return True, wire.encode(valid_message(rng))


def recv_until(sock: socket.socket, want_status: bool) -> str:
    """Read until a StatusReport (``alive``), EOF (``closed``), or nothing for a while
    (``stalled``: the daemon waits for the rest of a frame whose header promised more)."""
    reader = wire.FrameReader()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return "closed"
        except TimeoutError:
            return "stalled"
        if not data:
            return "closed"
        reader.feed(data)
        try:
            while (body := reader.next_frame()) is not None:
                msg = wire.decode_daemon(body)
                if want_status and isinstance(msg, wire.StatusReport):
                    return "alive"
        except Exception:
            return "garbled"


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def hello(s: socket.socket) -> None:
    s.sendall(wire.encode(wire.Hello(client="fuzzer")))
    reader = wire.FrameReader()
    while (body := reader.next_frame()) is None:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed during Hello")
        reader.feed(data)
    msg = wire.decode_daemon(body)
    if not isinstance(msg, wire.Welcome):
        raise ConnectionError(f"no Welcome: {msg!r}")


def abort(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class Pacer:
    """At most ``rate`` events a second (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if self.gap:
            now = time.monotonic()
            if now < self.next:
                time.sleep(self.next - now)
            self.next = max(now, self.next) + self.gap


def fuzz(path: str, frames: int, rng: random.Random, counts: Counter[str], pacer: Pacer) -> None:
    sent = 0
    while sent < frames:
        pacer.wait()
        s = connect(path, timeout=STALL_SECONDS)
        greeted = False
        try:
            while sent < frames:
                needs_hello, payload = fuzz_payload(rng)
                if needs_hello and not greeted:
                    hello(s)
                    greeted = True
                elif not needs_hello and greeted:
                    break  # this payload must be a first message: new connection
                pacer.wait()
                status = wire.encode(wire.Status(id=1))
                if rng.random() < 0.03:  # a frame cut short, then the connection dropped
                    s.sendall(payload[: max(1, len(payload) // 2)])
                    sent += 1
                    counts["cut_short"] += 1
                    break
                try:
                    s.sendall(payload + status)
                except (BrokenPipeError, ConnectionResetError):
                    counts["send_failed"] += 1
                    break
                sent += 1
                outcome = recv_until(s, want_status=True)
                counts[outcome] += 1
                if outcome != "alive":
                    break
                greeted = True
        except (ConnectionError, TimeoutError, OSError) as exc:
            counts[f"error:{type(exc).__name__}"] += 1
        finally:
            s.close()


def churn(path: str, churns: int, rng: random.Random, counts: Counter[str], pacer: Pacer) -> None:
    for _ in range(churns):
        pacer.wait()
        mode = rng.randrange(6)
        s = connect(path)
        try:
            if mode in (1, 2, 4, 5):
                hello(s)
            if mode in (2, 5):
                s.sendall(wire.encode(wire.Status(id=1)))
                counts["churn_" + recv_until(s, want_status=True)] += 1
            if mode >= 3:
                abort(s)
                counts["churn_abort"] += 1
                continue
        except (ConnectionError, TimeoutError, OSError) as exc:
            counts[f"churn_error:{type(exc).__name__}"] += 1
        s.close()
        counts["churn_closed"] += 1


def main() -> None:
    path, frames, churns, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    pacer = Pacer(rate)
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    t0 = time.monotonic()
    fuzz(path, frames, rng, counts, pacer)
    t1 = time.monotonic()
    churn(path, churns, rng, counts, pacer)
    t2 = time.monotonic()
    # the daemon must still answer a plain client
    s = connect(path)
    hello(s)
    s.sendall(wire.encode(wire.Status(id=1)))
    alive = recv_until(s, want_status=True) == "alive"
    s.close()
    print(
        json.dumps(
            {
                "frames": frames,
                "churns": churns,
                "fuzz_seconds": round(t1 - t0, 2),
                "churn_seconds": round(t2 - t1, 2),
                "counts": dict(counts),
                "alive": alive,
                "pid": os.getpid(),
            }
        )
    )
    sys.exit(0 if alive else 1)


if __name__ == "__main__":
    main()

"""Connection set-up and round trips of aegisd, side by side with OpenSSH's ssh-agent.

DESIGN §6: these machines are noisy, so the figures that matter are ratios measured in one
run. The script starts a daemon on a temporary config and ``ssh-agent -D -a SOCK``, then, from
this one Python process with the same client style (a raw blocking socket plus ``struct``;
the ``aegisd.wire`` codec for aegisd), measures:

  a. aegisd connection set-up: connect + Hello/Welcome, which includes the daemon's peer
     identification (SO_PEERCRED, pidfd, /proc/<pid>/exe, cmdline, parents, rule match);
  b. aegisd Status round trip on an open connection (and ListActions, which needs a caller
     rule to match);
  c. ssh-agent SSH2_AGENTC_REQUEST_IDENTITIES (11) round trip on an open connection, and its
     connect + first request for comparison with (a);
  d. optionally the SDK (``AegisClient`` under trio) doing Status on an open connection.

It prints p50/p99 and the ratios; there is no pass/fail. Every phase has a time budget so the
whole run stays bounded. Usage: ``python bench/handshake.py [-n 2000] [--max-seconds 120]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aegisd import wire

IO_TIMEOUT = 5.0
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12


# ---- processes ---------------------------------------------------------------------------


def config_text(root: Path) -> str:
    exe = json.dumps(os.path.realpath(sys.executable))
    return f"""
[daemon]
socket = {json.dumps(str(root / "run" / "aegisd.sock"))}
audit_log = {json.dumps(str(root / "state" / "audit.jsonl"))}
log_level = "warning"
max_connections = 256

[[callers]]
name = "bench"
exe = [{exe}]
actions = ["bench.*"]

[actions."bench.read"]
description = "no approval, proxy GET (never called here)"
approval = "none"
params = {{ id = "^[0-9]{{1,8}}$" }}
request = {{ url = "http://127.0.0.1:9/items/{{id}}" }}
"""


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if path.exists():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
                return
        time.sleep(0.01)
    raise SystemExit(f"{what} did not come up within 15 s:\n{log.read_text()}")


@contextlib.contextmanager
def running(argv: list[str], sock: Path, what: str, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_for_socket(sock, proc, what, log)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---- clients -----------------------------------------------------------------------------


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.connect(str(path))
    return s


class AegisRaw:
    """Blocking client: one frame out, one frame in."""

    def __init__(self, path: Path) -> None:
        self.sock = connect(path)
        self._id = 0

    def exchange(self, msg: wire.ClientMessage) -> wire.DaemonMessage:
        self.sock.sendall(wire.encode(msg))
        (length,) = struct.unpack(">I", recv_exact(self.sock, 4))
        return wire.decode_daemon(recv_exact(self.sock, length))

    def hello(self) -> wire.Welcome:
        answer = self.exchange(wire.Hello(client="bench"))
        if not isinstance(answer, wire.Welcome):
            raise SystemExit(f"daemon refused the handshake: {answer}")
        return answer

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def close(self) -> None:
        self.sock.close()


class AgentRaw:
    """Blocking ssh-agent client (draft-miller-ssh-agent: uint32 length, byte type, body)."""

    def __init__(self, path: Path) -> None:
        self.sock = connect(path)

    def request_identities(self) -> None:
        self.sock.sendall(struct.pack(">IB", 1, SSH_AGENTC_REQUEST_IDENTITIES))
        (length,) = struct.unpack(">I", recv_exact(self.sock, 4))
        body = recv_exact(self.sock, length)
        if body[0] != SSH_AGENT_IDENTITIES_ANSWER:
            raise SystemExit(f"unexpected ssh-agent answer type {body[0]}")

    def close(self) -> None:
        self.sock.close()


# ---- measuring ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    samples: list[float]  # seconds

    def pct(self, p: float) -> float:
        s = sorted(self.samples)
        return s[min(len(s) - 1, round(p * (len(s) - 1)))]

    @property
    def p50(self) -> float:
        return self.pct(0.50)

    @property
    def p99(self) -> float:
        return self.pct(0.99)


def measure(name: str, op: Callable[[], None], n: int, warmup: int, budget: float) -> Result:
    """Run ``op`` ``warmup`` times unmeasured, then up to ``n`` times within ``budget`` s."""
    for _ in range(warmup):
        op()
    samples: list[float] = []
    stop_at = time.monotonic() + budget
    clock = time.perf_counter
    while len(samples) < n and time.monotonic() < stop_at:
        t0 = clock()
        op()
        samples.append(clock() - t0)
    if len(samples) < n:
        print(f"  note: {name}: time budget reached after {len(samples)} of {n} samples")
    return Result(name, samples)


def aegis_setup(path: Path) -> Callable[[], None]:
    def op() -> None:
        c = AegisRaw(path)
        c.hello()
        c.close()

    return op


def aegis_request(
    client: AegisRaw, make: Callable[[int], wire.ClientMessage]
) -> Callable[[], None]:
    def op() -> None:
        client.exchange(make(client.next_id()))

    return op


def agent_setup(path: Path) -> Callable[[], None]:
    def op() -> None:
        a = AgentRaw(path)
        a.request_identities()
        a.close()

    return op


def sdk_status(path: Path, n: int, warmup: int, budget: float) -> Result:
    import trio

    from aegisd.client import AegisClient

    samples: list[float] = []

    async def main() -> None:
        async with AegisClient(path) as c:
            for _ in range(warmup):
                await c.status()
            stop_at = time.monotonic() + budget
            while len(samples) < n and time.monotonic() < stop_at:
                t0 = time.perf_counter()
                await c.status()
                samples.append(time.perf_counter() - t0)

    trio.run(main)
    return Result("SDK Status round trip (trio)", samples)


# ---- report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f}"


def report(results: list[Result], ratios: list[tuple[str, Result, Result]]) -> None:
    width = max(len(r.name) for r in results)
    print()
    print(f"{'measurement':<{width}}  {'n':>5}  {'p50 ms':>8}  {'p99 ms':>8}")
    print(f"{'-' * width}  {'-' * 5}  {'-' * 8}  {'-' * 8}")
    for r in results:
        print(f"{r.name:<{width}}  {len(r.samples):>5}  {ms(r.p50)}  {ms(r.p99)}")
    print()
    print("ratios (same client style, same run)")
    for label, a, b in ratios:
        print(f"  {label:<{width + 4}} p50 {a.p50 / b.p50:6.2f}x   p99 {a.p99 / b.p99:6.2f}x")
    print()
    print("DESIGN §6 targets, for reading the figures: connection set-up p50 under 1 ms;")
    print("a round trip without approval within 3x ssh-agent's (p50).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="samples per measurement")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured runs first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound for the run")
    parser.add_argument("--no-sdk", action="store_true", help="skip the SDK measurement")
    args = parser.parse_args()

    agent = shutil.which("ssh-agent")
    aegisd = Path(sys.executable).with_name("aegisd")
    if agent is None:
        raise SystemExit("ssh-agent not found (apt-get install openssh-client)")
    if not aegisd.exists():
        raise SystemExit(f"{aegisd} not found: run from the project's venv")
    phases = 6 if args.no_sdk else 7
    budget = args.max_seconds / phases

    root = Path(tempfile.mkdtemp(prefix="aegbench", dir="/tmp"))
    try:
        root.chmod(0o700)
        cfg = root / "aegisd.toml"
        cfg.write_text(config_text(root))
        sock = root / "run" / "aegisd.sock"
        agent_sock = root / "agent.sock"
        print(f"aegisd {aegisd}  ssh-agent {agent}  python {sys.version.split()[0]}")
        print(f"n={args.n} warmup={args.warmup} budget {budget:.0f} s per measurement")
        with (
            running([str(aegisd), "--config", str(cfg)], sock, "aegisd", root / "aegisd.log"),
            running([agent, "-D", "-a", str(agent_sock)], agent_sock, "ssh-agent", root / "a.log"),
        ):
            welcome = AegisRaw(sock)
            peer = welcome.hello().peer
            print(f"peer as the daemon sees it: pid {peer.pid} exe {peer.exe} caller {peer.caller}")
            results: list[Result] = []
            setup = measure(
                "aegisd set-up: connect + Hello/Welcome",
                aegis_setup(sock),
                args.n,
                args.warmup,
                budget,
            )
            status = measure(
                "aegisd Status round trip (open conn.)",
                aegis_request(welcome, lambda i: wire.Status(id=i)),
                args.n,
                args.warmup,
                budget,
            )
            actions = measure(
                "aegisd ListActions round trip",
                aegis_request(welcome, lambda i: wire.ListActions(id=i)),
                args.n,
                args.warmup,
                budget,
            )
            welcome.close()
            held = AgentRaw(agent_sock)
            agent_rt = measure(
                "ssh-agent REQUEST_IDENTITIES round trip",
                held.request_identities,
                args.n,
                args.warmup,
                budget,
            )
            held.close()
            agent_setup_r = measure(
                "ssh-agent connect + first request",
                agent_setup(agent_sock),
                args.n,
                args.warmup,
                budget,
            )
            results += [setup, status, actions, agent_rt, agent_setup_r]
            ratios = [
                ("Status / ssh-agent round trip", status, agent_rt),
                ("ListActions / ssh-agent round trip", actions, agent_rt),
                ("set-up / ssh-agent connect+request", setup, agent_setup_r),
            ]
            if not args.no_sdk:
                sdk = sdk_status(sock, args.n, args.warmup, budget)
                results.append(sdk)
                ratios.append(("SDK Status / ssh-agent round trip", sdk, agent_rt))
        report(results, ratios)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

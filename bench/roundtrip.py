"""Round trip of an action that needs no approval, side by side with OpenSSH ssh-agent.

DESIGN §6: "Round trip of an action that needs no approval, over the socket, peer checks
included: p50 within 3x the same client's round trip to OpenSSH ssh-agent in the same run."

What runs: a real ``aegisd`` subprocess (policy: one caller rule for this interpreter, one
action ``bench.read`` with ``approval = "none"``, proxy GET to ``bench/upstream.py``, a tiny
keep-alive HTTP server in its own process) and a real ``ssh-agent -D`` holding a fresh
ed25519 key. From this one process, in interleaved rounds so that machine noise hits every
series alike, it times:

* ``ssh-agent sign``: SIGN_REQUEST with the ed25519 key (the agent's "action": it uses the
  secret it holds and returns only the result), and ``ssh-agent list`` (REQUEST_IDENTITIES,
  the bare IPC floor), on a kept-open connection; ``ssh-agent list, new conn``.
* ``upstream direct``: this process's own keep-alive GET to the upstream (the part of a
  proxied round trip that is not aegisd's).
* ``raw proxy``: the wire protocol by hand (``wireclient.AegisWire``), ``Proxy(bench.read)``
  on a kept-open connection (peer identified at connect, caller rule and action checked and
  the request and its result audited per request, with fsync, as DESIGN §3.8 requires).
* ``sdk proxy``: the same through ``AegisClient.proxy`` (anyio on trio).
* ``raw list_actions``: a request that needs no upstream and writes no audit record.
* ``raw proxy, new conn``: connect + Hello/Welcome (peer identification) + Proxy each time.

Then throughput: 8 client processes, each on its own connection, for a fixed time, against
aegisd (raw proxy and SDK proxy) and against ssh-agent (sign).

``--profile DIR`` instead runs the daemon under pyinstrument for the raw and SDK proxy
series only and prints where its busy time went.

Run: ``.venv/bin/python bench/roundtrip.py [--n 2000] [--seconds 5] [--profile DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from daemonproc import DaemonProc
from report import Result, percentile
from wireclient import AegisWire, SshAgent

from aegisd import wire

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 3.0


def write_config(root: Path, upstream_port: int) -> tuple[Path, Path]:
    sock = root / "run" / "aegisd.sock"
    exe = os.path.realpath(sys.executable)
    text = f"""
[daemon]
socket = {json.dumps(str(sock))}
audit_log = {json.dumps(str(root / "state" / "audit.jsonl"))}
log_level = "warning"

[[callers]]
name = "bench"
exe = [{json.dumps(exe)}]
actions = ["bench.*"]

[actions."bench.read"]
description = "List repositories (no approval)"
approval = "none"
credential = {{ kind = "none" }}
delivery = "proxy"
request = {{ method = "GET", url = "http://127.0.0.1:{upstream_port}/repos" }}
"""
    config = root / "aegisd.toml"
    config.write_text(text)
    return config, sock


class Upstream:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Agent:
    """``ssh-agent -D -a SOCK`` with one fresh ed25519 key."""

    def __init__(self, root: Path) -> None:
        self.sock = root / "ssh-agent.sock"
        key = root / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.sock)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("ssh-agent did not create its socket")
            time.sleep(0.02)
        env = dict(os.environ, SSH_AUTH_SOCK=str(self.sock))
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=env, capture_output=True)
        version = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
        self.version = (version.stderr or version.stdout).strip()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def http_get_keepalive(port: int) -> Callable[[], None]:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = b"GET /repos HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"

    def get() -> None:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += s.recv(65536)

    return get


# ---- worker processes for throughput ---------------------------------------------------------


def worker(kind: str, path: str, start_at: float, seconds: float) -> None:
    """One throughput client: waits until ``start_at`` (monotonic), runs ``seconds``."""
    lat: list[float] = []
    if kind == "sdk":
        import trio

        from aegisd.client import AegisClient

        async def run() -> None:
            async with AegisClient(path) as c:
                await c.proxy("bench.read")
                await trio.sleep(max(0.0, start_at - time.monotonic()))
                end = start_at + seconds
                while (t0 := time.perf_counter()) and time.monotonic() < end:
                    await c.proxy("bench.read")
                    lat.append(time.perf_counter() - t0)

        trio.run(run)
    elif kind == "raw":
        with AegisWire(path) as c:
            c.hello()
            c.proxy("bench.read")
            time.sleep(max(0.0, start_at - time.monotonic()))
            end = start_at + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                answer = c.proxy("bench.read")
                lat.append(time.perf_counter() - t0)
                assert isinstance(answer, wire.ProxyResponse), answer
    else:
        with SshAgent(path) as a:
            blob = a.identities()[0]
            time.sleep(max(0.0, start_at - time.monotonic()))
            end = start_at + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                a.sign(blob, b"bench data to sign")
                lat.append(time.perf_counter() - t0)
    print(json.dumps({"n": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99)}))


def throughput(kind: str, path: Path, clients: int, seconds: float) -> dict[str, float]:
    start_at = time.monotonic() + 1.5  # every worker connected and warmed up by then
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, str(path), repr(start_at), repr(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"{kind} worker failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(r["n"] for r in results)
    return {
        "ops_per_s": total / seconds,
        "p50_ms": 1000 * sorted(r["p50"] for r in results)[len(results) // 2],
        "p99_ms": 1000 * max(r["p99"] for r in results),
    }


# ---- the side-by-side series -------------------------------------------------------------------


def run(args: argparse.Namespace) -> Result:
    import trio

    from aegisd.client import AegisClient

    res = Result("roundtrip")
    root = Path(tempfile.mkdtemp(prefix="aegrt", dir="/tmp"))
    upstream = Upstream()
    agent: Agent | None = None
    daemon: DaemonProc | None = None
    try:
        config, sock = write_config(root, upstream.port)
        profile = Path(args.profile) / "roundtrip" if args.profile else None
        daemon = DaemonProc(config, sock, profile=profile)
        if profile is None:
            agent = Agent(root)
        series: dict[str, list[float]] = {}

        async def main() -> None:
            async with AegisClient(sock) as sdk:
                raw = AegisWire(sock)
                raw.hello()
                get = http_get_keepalive(upstream.port)
                ops: dict[str, Callable[[], object]] = {
                    "raw proxy": lambda: raw.proxy("bench.read"),
                    "raw list_actions": raw.list_actions,
                    "upstream direct": get,
                }
                sdk_ops = {"sdk proxy": lambda: sdk.proxy("bench.read")}
                if agent is not None:
                    ssh = SshAgent(agent.sock)
                    blob = ssh.identities()[0]
                    ops["ssh-agent sign"] = lambda: ssh.sign(blob, b"bench data to sign")
                    ops["ssh-agent list"] = ssh.identities

                    def ssh_fresh() -> None:
                        with SshAgent(agent.sock) as a:
                            a.identities()

                    def raw_fresh() -> None:
                        with AegisWire(sock) as c:
                            c.hello()
                            c.proxy("bench.read")

                    ops["ssh-agent list, new conn"] = ssh_fresh
                    ops["raw proxy, new conn"] = raw_fresh
                # correctness once, then warm-up
                answer = raw.proxy("bench.read")
                assert isinstance(answer, wire.ProxyResponse) and answer.status == 200, answer
                for _ in range(args.warmup):
                    for op in ops.values():
                        op()
                    await sdk.proxy("bench.read")
                rounds = max(1, args.n // args.block)
                for _ in range(rounds):
                    for name, op in ops.items():
                        out = series.setdefault(name, [])
                        for _ in range(args.block):
                            t0 = time.perf_counter()
                            op()
                            out.append(time.perf_counter() - t0)
                    for name, aop in sdk_ops.items():
                        out = series.setdefault(name, [])
                        for _ in range(args.block):
                            t0 = time.perf_counter()
                            await aop()
                            out.append(time.perf_counter() - t0)
                raw.close()

        trio.run(main)
        p50 = {k: percentile(v, 50) * 1e6 for k, v in series.items()}
        p99 = {k: percentile(v, 99) * 1e6 for k, v in series.items()}
        for name in series:
            res.add(f"{name} p50", round(p50[name], 1), "µs", note=f"p99 {p99[name]:.0f} µs")
        if agent is not None:
            base = p50["ssh-agent sign"]
            for name in ("sdk proxy", "raw proxy"):
                ratio = p50[name] / base
                res.add(
                    f"{name} / ssh-agent sign (p50)",
                    round(ratio, 2),
                    "x",
                    target=f"≤ {TARGET_RATIO:g}x",
                    met=ratio <= TARGET_RATIO,
                    note="DESIGN §6 round trip of a no-approval action"
                    if name == "sdk proxy"
                    else "",
                )
            res.add(
                "raw proxy minus upstream / ssh-agent sign (p50)",
                round((p50["raw proxy"] - p50["upstream direct"]) / base, 2),
                "x",
                note="aegisd's own share: the upstream's direct round trip subtracted",
            )
            res.add(
                "raw list_actions / ssh-agent list (p50)",
                round(p50["raw list_actions"] / p50["ssh-agent list"], 2),
                "x",
                note="bare request/answer over the socket, no upstream, no audit write",
            )
            res.add(
                "raw proxy, new conn / ssh-agent list, new conn (p50)",
                round(p50["raw proxy, new conn"] / p50["ssh-agent list, new conn"], 2),
                "x",
            )
            res.extra["ssh_version"] = agent.version
            for kind, path in (("raw", sock), ("sdk", sock), ("ssh", agent.sock)):
                tp = throughput(kind, path, args.clients, args.seconds)
                label = {"raw": "raw proxy", "sdk": "sdk proxy", "ssh": "ssh-agent sign"}[kind]
                res.add(
                    f"throughput, {args.clients} clients, {label}",
                    round(tp["ops_per_s"]),
                    "ops/s",
                    note=f"per-request p50 {tp['p50_ms']:.2f} ms, p99 {tp['p99_ms']:.2f} ms",
                )
        res.extra["audit_fs"] = _fs_of(root)
        res.extra["rss_mb_after"] = round(daemon.rss() / 2**20, 1)
    finally:
        if daemon is not None:
            daemon.stop()
        if agent is not None:
            agent.close()
        upstream.close()
        shutil.rmtree(root, ignore_errors=True)
    if args.profile:
        summary = json.loads((Path(args.profile) / "roundtrip.json").read_text())
        _print_profile(summary)
        res.extra["profile"] = summary
    return res


def _fs_of(path: Path) -> str:
    out = subprocess.run(
        ["findmnt", "-no", "FSTYPE,SOURCE", "-T", str(path)], capture_output=True, text=True
    )
    return out.stdout.strip()


def _print_profile(summary: dict[str, object]) -> None:
    print(
        f"daemon profile: {summary['busy_s']} s busy of {summary['total_s']} s "
        f"(idle wait {summary['idle_s']} s); top self time:"
    )
    for row in summary["top_self"][:15]:  # type: ignore[index]
        print(f"  {100 * row['share_of_busy']:5.1f}%  {row['function']}")
    print("  cumulative (s):", summary.get("cumulative"))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="round trips per series")
    parser.add_argument("--block", type=int, default=100, help="round trips per interleaved block")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    parser.add_argument("--profile", help="profile the daemon; write reports into this dir")
    args = parser.parse_args()
    print(f"bench/roundtrip.py: {args.n} round trips per series, interleaved")
    run(args).emit()


if __name__ == "__main__":
    main()

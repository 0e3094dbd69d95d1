"""The audit log under abuse (issue 13, findings 3 and 6): a refusal flood, and Status on a
large log.

1. **Refusal flood.** One process opens 8 connections and pipelines unknown-action requests
   for ``--seconds``, first against a daemon with the per-peer refusal budget disabled
   (``[audit] refusals_per_second = 0``: the behaviour before the fix), then against one with
   the default budget. Reported: refusals answered per second, refusal *records* written per
   second, audit bytes per second, and the ratio after/before. The client gets its typed
   error either way; only the records differ.
2. **Status on a large log.** A valid chain of ``--log-mb`` MB (rotated files of 16 MiB,
   written directly) under a fresh daemon; one connection asks ``Status`` while another does
   ``Lock`` round trips (each appends a durable record). Reported: the first Status's latency
   (it waits for the background verification at most 1 s, then answers "verifying"), the Lock
   latency while that Status is outstanding against the same on a small log (the baseline of
   this run), the time until the background check has caught up, and a steady-state Status.

Run: ``.venv/bin/python bench/audit_flood.py [--seconds 5] [--log-mb 170]``.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from daemonproc import DaemonProc  # noqa: E402
from report import Result, percentile  # noqa: E402
from wireclient import AegisWire  # noqa: E402

from aegisd import wire  # noqa: E402
from tests.auditgen import write_chain  # noqa: E402

CONNECTIONS = 8
BATCH = 60


def write_config(root: Path, extra: str = "") -> tuple[Path, Path, Path]:
    sock = root / "run" / "aegisd.sock"
    audit = root / "state" / "audit.jsonl"
    exe = os.path.realpath(sys.executable)
    text = f"""
[daemon]
socket = {json.dumps(str(sock))}
audit_log = {json.dumps(str(audit))}
log_level = "warning"

[[callers]]
name = "bench"
exe = [{json.dumps(exe)}]
actions = ["bench.*"]

[actions."bench.read"]
description = "never called"
approval = "none"
credential = {{ kind = "none" }}
delivery = "proxy"
request = {{ method = "GET", url = "http://127.0.0.1:9/x" }}
{extra}
"""
    config = root / "aegisd.toml"
    config.write_text(text)
    return config, sock, audit


def audit_bytes(audit: Path) -> int:
    return sum(p.stat().st_size for p in audit.parent.glob("audit.jsonl*"))


def count_events(audit: Path, *events: str) -> dict[str, int]:
    counts = dict.fromkeys(events, 0)
    for p in audit.parent.glob("audit.jsonl*"):
        if not (p.name == audit.name or p.suffix[1:].isdigit()):
            continue
        for raw in p.read_bytes().splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("event") in counts:
                counts[rec["event"]] += 1
            if rec.get("event") == "refusals_suppressed" and "suppressed" in counts:
                counts["suppressed"] += int(rec["count"])
    return counts


def flood(sock: Path, seconds: float) -> int:
    """Unknown-action requests from one process over 8 connections; returns answers."""
    answered = [0] * CONNECTIONS
    deadline = time.monotonic() + seconds

    def one(k: int) -> None:
        with AegisWire(sock) as c:
            c.hello()
            frames = b"".join(
                wire.encode(wire.Proxy(id=i + 1, action="nope.flood")) for i in range(BATCH)
            )
            while time.monotonic() < deadline:
                c.sock.sendall(frames)
                for _ in range(BATCH):
                    answer = c.recv()
                    # unknown_action, or rate_limited past 64 in flight on one connection
                    assert isinstance(answer, wire.Error), answer
                    answered[k] += 1

    threads = [threading.Thread(target=one, args=(k,)) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(answered)


def run_flood(root: Path, seconds: float, extra: str) -> dict[str, float]:
    config, sock, audit = write_config(root, extra)
    d = DaemonProc(config, sock)
    try:
        before = audit_bytes(audit)
        t0 = time.perf_counter()
        n = flood(sock, seconds)
        elapsed = time.perf_counter() - t0
        grown = audit_bytes(audit) - before
    finally:
        d.stop()
    counts = count_events(audit, "refused", "refusals_suppressed", "suppressed")
    return {
        "answered_per_s": n / elapsed,
        "records_per_s": counts["refused"] / elapsed,
        "bytes_per_s": grown / elapsed,
        "summaries": counts["refusals_suppressed"],
        "accounted": (counts["refused"] + counts["suppressed"]) / n if n else 0.0,
    }


def lock_latencies(sock: Path, n: int) -> list[float]:
    out = []
    with AegisWire(sock) as c:
        c.hello()
        for _ in range(n):
            t0 = time.perf_counter()
            assert isinstance(c.ask(wire.Lock(id=c.next_id())), wire.Locked)
            out.append(time.perf_counter() - t0)
    return out


def run_large(root: Path, log_mb: int, n: int) -> dict[str, float]:
    config, sock, audit = write_config(root)
    t0 = time.perf_counter()
    write_chain(audit, log_mb * 1_000_000)
    generated = time.perf_counter() - t0
    d = DaemonProc(config, sock, start_timeout=120.0)
    try:
        started = time.perf_counter()
        with AegisWire(sock) as a, AegisWire(sock) as b:
            a.hello()
            b.hello()
            sel = selectors.DefaultSelector()
            sel.register(a.sock, selectors.EVENT_READ)
            t_status = time.perf_counter()
            a.sock.sendall(wire.encode(wire.Status(id=1)))
            during: list[float] = []
            while not sel.select(timeout=0):
                t1 = time.perf_counter()
                assert isinstance(b.ask(wire.Lock(id=b.next_id())), wire.Locked)
                during.append(time.perf_counter() - t1)
            first = a.recv()
            first_latency = time.perf_counter() - t_status
            assert isinstance(first, wire.StatusReport)
            while True:
                report = a.ask(wire.Status(id=a.next_id()))
                assert isinstance(report, wire.StatusReport)
                if not report.audit_verifying:
                    break
            caught_up = time.perf_counter() - started
            assert report.audit_ok, report.audit_detail
            steady = []
            for _ in range(n):
                t1 = time.perf_counter()
                a.ask(wire.Status(id=a.next_id()))
                steady.append(time.perf_counter() - t1)
    finally:
        d.stop()
    return {
        "generated_s": generated,
        "first_status_s": first_latency,
        "first_status_verifying": float(first.audit_verifying),
        "locks_during_status": len(during),
        "lock_during_p50_ms": percentile(during, 50) * 1e3,
        "lock_during_max_ms": max(during) * 1e3 if during else float("nan"),
        "caught_up_s": caught_up,
        "steady_status_p50_ms": percentile(steady, 50) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--log-mb", type=int, default=170)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    res = Result("audit_flood")
    with tempfile.TemporaryDirectory(prefix="aegb", dir="/tmp") as tmp:
        root = Path(tmp)
        (root / "off").mkdir(mode=0o700)
        (root / "on").mkdir(mode=0o700)
        off = run_flood(root / "off", args.seconds, "[audit]\nrefusals_per_second = 0\n")
        on = run_flood(root / "on", args.seconds, "")
        res.add("flood, limiter off: refusals answered", off["answered_per_s"], "/s")
        res.add("flood, limiter off: refusal records", off["records_per_s"], "/s")
        res.add("flood, limiter off: audit growth", off["bytes_per_s"] / 1e6, "MB/s")
        res.add("flood, limiter on: refusals answered", on["answered_per_s"], "/s")
        res.add(
            "flood, limiter on: refusal records",
            on["records_per_s"],
            "/s",
            note=f"plus {on['summaries']:.0f} refusals_suppressed summaries; "
            f"{on['accounted']:.0%} of refusals accounted for",
        )
        res.add("flood, limiter on: audit growth", on["bytes_per_s"] / 1e6, "MB/s")
        res.add(
            "records per second, on/off",
            on["records_per_s"] / off["records_per_s"] if off["records_per_s"] else None,
            "x",
        )
        (root / "small").mkdir(mode=0o700)
        config, sock, _ = write_config(root / "small")
        d = DaemonProc(config, sock)
        try:
            idle = lock_latencies(sock, args.n)
        finally:
            d.stop()
        (root / "large").mkdir(mode=0o700)
        big = run_large(root / "large", args.log_mb, args.n)
        base = percentile(idle, 50) * 1e3
        res.add("Lock p50, small log (baseline)", base, "ms")
        res.add(
            f"first Status, {args.log_mb} MB log",
            big["first_status_s"] * 1e3,
            "ms",
            note="answered 'verifying'" if big["first_status_verifying"] else "caught up",
        )
        res.add(
            "Lock p50 while that Status is outstanding",
            big["lock_during_p50_ms"],
            "ms",
            note=f"{big['locks_during_status']:.0f} Locks served meanwhile, "
            f"max {big['lock_during_max_ms']:.2f} ms; ratio to baseline "
            f"{big['lock_during_p50_ms'] / base:.2f}x",
        )
        res.add("background check caught up after start", big["caught_up_s"], "s")
        res.add(f"steady Status p50, {args.log_mb} MB log", big["steady_status_p50_ms"], "ms")
    res.emit()


if __name__ == "__main__":
    main()

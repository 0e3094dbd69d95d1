"""Run every benchmark, print one table, and write ``docs/BENCHMARKS.md``.

Each bench runs as its own subprocess (fresh interpreter, its own daemon and tenant), one
after another so they do not compete for the two cores. Results are read from the
``BENCH_JSON`` line (``report.py``); for a script without one, the last JSON object line
(``devtenant_start.py``) or its text table (``handshake.py``) is parsed instead. A bench that
fails or times out is listed as such; the others still run.

Run: ``make bench`` or ``.venv/bin/python bench/run_all.py [--quick] [--only NAME,...]
[--no-write]``. ``--quick`` uses smaller sample counts (for a smoke run; the published file
comes from a full run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from report import PREFIX, machine  # noqa: E402


@dataclass
class Bench:
    name: str
    script: str
    args: list[str]
    quick_args: list[str]
    timeout: float
    what: str


BENCHES = [
    Bench(
        "handshake",
        "handshake.py",
        ["-n", "2000"],
        ["-n", "300", "--max-seconds", "30"],
        300,
        "connection set-up (connect + Hello/Welcome, peer identified) and bare round trips",
    ),
    Bench(
        "roundtrip",
        "roundtrip.py",
        [],
        ["--n", "400", "--seconds", "2"],
        600,
        "no-approval proxy round trip vs ssh-agent; 8-client throughput",
    ),
    Bench(
        "pending",
        "pending.py",
        [],
        ["--n", "200", "--expiry", "30", "--approve-at", "20"],
        600,
        "1,000 approvals pending against the dev tenant",
    ),
    Bench(
        "pending_slow_auth0",
        "pending.py",
        ["--auth0-latency-ms", "300"],
        ["--n", "200", "--expiry", "30", "--approve-at", "20", "--auth0-latency-ms", "300"],
        600,
        "the same with every token-endpoint answer delayed 300 ms (a slow Auth0)",
    ),
    Bench(
        "latency",
        "latency.py",
        [],
        ["--n", "10", "--intervals", "1,2"],
        600,
        "approval to credential vs poll interval",
    ),
    Bench(
        "shim_start",
        "shim_start.py",
        [],
        ["--runs", "5"],
        600,
        "aegis-mcp start to initialize reply vs a bare MCP SDK server",
    ),
    Bench(
        "audit_flood",
        "audit_flood.py",
        [],
        ["--seconds", "2", "--log-mb", "40", "--n", "10"],
        600,
        "refusal flood with the per-peer budget off and on; Status on a 170 MB log",
    ),
    Bench("import_client", "import_client.py", [], ["--runs", "5"], 300, "import aegisd.client"),
    Bench("devtenant_start", "devtenant_start.py", [], ["3"], 300, "dev tenant start-up"),
]


@dataclass
class Row:
    bench: str
    metric: str
    target: str
    value: str
    verdict: str  # met, MISSED, or "" (context)
    note: str = ""


@dataclass
class Outcome:
    bench: Bench
    seconds: float
    rows: list[Row] = field(default_factory=list)
    error: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _from_bench_json(name: str, payload: dict[str, Any]) -> list[Row]:
    rows = []
    for m in payload.get("metrics", []):
        met = m.get("met")
        verdict = "" if met is None else ("met" if met else "MISSED")
        rows.append(
            Row(
                name,
                m["name"],
                m.get("target", ""),
                _fmt(m.get("value"), m.get("unit", "")),
                verdict,
                m.get("note", ""),
            )
        )
    return rows


_TABLE_ROW = re.compile(r"^(?P<name>.+?)\s{2,}(?P<n>\d+)\s+(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s*$")
_RATIO = re.compile(r"^\s+(?P<label>.+?)\s+p50\s+(?P<p50>[\d.]+)x\s+p99\s+(?P<p99>[\d.]+)x")


def _from_handshake_text(out: str) -> list[Row]:
    """``handshake.py`` prints a table (name, n, p50 ms, p99 ms) and ratio lines."""
    rows = []
    for line in out.splitlines():
        if m := _TABLE_ROW.match(line):
            name = m["name"].strip()
            p50 = float(m["p50"])
            if "set-up" in name:
                rows.append(
                    Row(
                        "handshake",
                        f"{name} p50",
                        "< 1 ms",
                        f"{p50:.3f} ms",
                        "met" if p50 < 1.0 else "MISSED",
                        f"p99 {float(m['p99']):.3f} ms, n={m['n']}",
                    )
                )
            else:
                rows.append(
                    Row("handshake", f"{name} p50", "", f"{p50:.3f} ms", "", f"p99 {m['p99']} ms")
                )
        elif m := _RATIO.match(line):
            rows.append(
                Row("handshake", f"ratio {m['label'].strip()} (p50)", "", f"{m['p50']}x", "")
            )
    return rows


def _from_json_line(name: str, payload: dict[str, Any]) -> list[Row]:
    rows = []
    target = payload.get("target_ms")
    for key, value in payload.items():
        if key in ("bench", "target_ms"):
            continue
        if key == "p50_ms" and target is not None:
            rows.append(
                Row(
                    name,
                    "p50",
                    f"< {target} ms",
                    f"{value} ms",
                    "met" if float(value) < float(target) else "MISSED",
                )
            )
        else:
            rows.append(Row(name, key, "", str(value), ""))
    return rows


def run_bench(bench: Bench, quick: bool) -> Outcome:
    argv = [sys.executable, str(HERE / bench.script), *(bench.quick_args if quick else bench.args)]
    print(f"\n=== {bench.name}: {' '.join(argv[1:])}", flush=True)
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=bench.timeout, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome(bench, time.monotonic() - t0, error=f"timed out after {bench.timeout:g} s")
    took = time.monotonic() - t0
    for line in done.stdout.splitlines():
        if not line.startswith(PREFIX):
            print("  " + line)
    outcome = Outcome(bench, took)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        outcome.error = f"exit {done.returncode}: " + " | ".join(tail)
        print("  FAILED: " + outcome.error)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PREFIX):
            payload = json.loads(line[len(PREFIX) :])
            outcome.raw = payload
            outcome.rows = _from_bench_json(bench.name, payload)
            return outcome
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except ValueError:
                continue
            outcome.raw = payload
            outcome.rows = _from_json_line(bench.name, payload)
            return outcome
    if bench.name == "handshake":
        outcome.rows = _from_handshake_text(done.stdout)
    if not outcome.rows and not outcome.error:
        outcome.error = "no machine-readable output"
    return outcome


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| bench | metric | target | measured | verdict |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error and not o.rows:
            lines.append(f"| {o.bench.name} | (did not complete) | | {o.error[:120]} | ERROR |")
        for r in o.rows:
            note = f" ({r.note})" if r.note else ""
            lines.append(f"| {r.bench} | {r.metric} | {r.target} | {r.value}{note} | {r.verdict} |")
    return lines


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def find(outcomes: list[Outcome], bench: str, prefix: str) -> Row | None:
    for o in outcomes:
        for r in o.rows:
            if r.bench == bench and r.metric.startswith(prefix):
                return r
    return None


def readme_table(outcomes: list[Outcome]) -> list[str]:
    """The short table for the README: one line per DESIGN §6 target."""
    picks = [
        ("No-approval round trip (SDK, proxy) vs ssh-agent sign, p50", "roundtrip", "sdk proxy /"),
        ("Connection set-up p50", "handshake", "aegisd set-up"),
        ("1,000 pending: daemon RSS", "pending", "daemon RSS"),
        ("1,000 pending: polls per approval", "pending", "polls per expired"),
        ("1,000 pending: every request answered", "pending", "requests answered"),
        ("1,000 pending: idle CPU", "pending", "daemon CPU while idle"),
        (
            "Approval → credential p95 (interval 5 s)",
            "latency",
            "approval to credential p95, interval 5 s",
        ),
        ("aegis-mcp start vs bare MCP server", "shim_start", "aegis_mcp_vs_bare"),
        ("import aegisd.client", "import_client", "importtime_cumulative"),
    ]
    lines = ["| What (DESIGN §6) | Target | Measured | |", "|---|---|---|---|"]
    for label, bench, prefix in picks:
        r = find(outcomes, bench, prefix)
        if r is None:
            lines.append(f"| {label} | | not measured | |")
        else:
            mark = {"met": "✓", "MISSED": "✗"}.get(r.verdict, "")
            lines.append(f"| {label} | {r.target} | {r.value} | {mark} |")
    return lines


def write_markdown(path: Path, outcomes: list[Outcome], command: str, started: str) -> None:
    m = machine()
    total = sum(o.seconds for o in outcomes)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run_all.py`; do not edit by hand. Why each missed target is missed,",
        "by how much, and what would close it, with the profiles behind it: `docs/PROOF.md`,",
        "section *Performance*.",
        "",
        f"- Date: {started}",
        f"- Machine: {m['nproc']} CPUs ({cpu_model()}), {m['platform']}",
        f"- Python: {m['implementation']} {m['python']}",
        f"- Command: `{command}` (from the repository root; total {total:.0f} s)",
        "- Method: DESIGN §6. Ratios are measured side by side in the same run, because these",
        "  machines are noisy; each bench runs in its own process with its own daemon.",
        "",
        "## Summary (for the README)",
        "",
        *readme_table(outcomes),
        "",
        f"Reproduce: `{command}`.",
        "",
        "## Every figure",
        "",
        *table(outcomes),
        "",
    ]
    errors = [o for o in outcomes if o.error]
    if errors:
        lines += ["## Benches that did not complete cleanly", ""]
        lines += [f"- {o.bench.name}: {o.error}" for o in errors]
        lines.append("")
    missed = [r for o in outcomes for r in o.rows if r.verdict == "MISSED"]
    if missed:
        lines += ["## Missed in this run", ""]
        lines += [f"- {r.bench}: {r.metric}: {r.value} (target {r.target})" for r in missed]
        lines += ["", "See `docs/PROOF.md`, *Performance*, for the analysis.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sample counts (smoke run)")
    parser.add_argument("--only", help="comma-separated bench names")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    wanted = set(args.only.split(",")) if args.only else None
    outcomes = []
    for bench in BENCHES:
        if wanted is not None and bench.name not in wanted:
            continue
        if not (HERE / bench.script).exists():
            print(f"\n=== {bench.name}: {bench.script} not present, skipped")
            continue
        outcomes.append(run_bench(bench, args.quick))
    print("\n" + "\n".join(table(outcomes)))
    command = ".venv/bin/python bench/run_all.py" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    if not args.no_write:
        write_markdown(Path(args.out), outcomes, command, started)
        print(f"\nwrote {args.out}")
    if any(o.error for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()

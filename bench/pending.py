"""1,000 approvals pending at once against the dev tenant (DESIGN §6, issues 5 and 9).

Targets: daemon RSS under 100 MB; polls per approval within 10 % of expiry / interval; every
request answered; idle CPU near zero.

What runs: the dev tenant in its own process (``tenantproc.py``: interval 5 s, its per-user
cap of five CIBA starts a minute disabled, which ``aegisctl dev-tenant`` has no flag for) and
``aegisd`` in its own process (so RSS and CPU are the daemon's alone), with ``max_pending``,
``max_pending_per_caller`` and ``ciba_starts_per_minute`` raised and ``requested_expiry = 60``.
This process sends 1,000 ``Authorize`` requests for ``demo.bench`` (CIBA approval, CIBA
token delivered) over 20 SDK connections, each with a distinct parameter so nothing
coalesces. Once all 1,000 are pending it watches: a sampler records the daemon's RSS and CPU
time and the tenant's poll counter every 0.25 s. At 40 s it approves half of them on the
"phone" and times each until its caller holds the credential; the other half run to their
expiry and must be answered ``approval_expired``.

Figures: peak RSS; polls per expired approval against the ideal 60 / 5 = 12 (the daemon
never polls at or after its deadline, so 11 is the most a well-behaved client can send: the
polls at 5, 10, …, 55 s); every request's outcome; daemon CPU in 0.25 s slices with no poll
("idle with 1,000 pending"), the CPU cost per poll, and CPU over a 5 s window; the tenant's
``slow_down`` count (must be 0: never early); approval-to-credential under this load.

Run: ``.venv/bin/python bench/pending.py [--n 1000] [--interval 5] [--expiry 60]
[--profile DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from daemonproc import DaemonProc
from report import Result, percentile
from tenantproc import TenantProc

BENCH_ACTION = """
[actions."demo.bench"]
description = "A CIBA token per request number (benchmarks)"
approval = "ciba"
binding_message = "Bench request {n}"
params = { n = "^[0-9]{1,6}$" }
credential = { kind = "ciba_token" }
delivery = "token"
"""

RSS_TARGET_MB = 100.0
POLL_TOLERANCE = 0.10


@dataclass
class Sample:
    t: float
    rss: int
    cpu: float
    polls: int
    starts: int


@dataclass
class Sampler:
    daemon: DaemonProc
    tenant: TenantProc
    period: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            c = self.tenant.call("counters")
            self.samples.append(
                Sample(
                    time.monotonic(),
                    self.daemon.rss(),
                    self.daemon.cpu_seconds(),
                    c["total_polls"],
                    c["bc_authorize"],
                )
            )
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()


def start_stack(
    root: Path,
    *,
    interval: float,
    expiry: int,
    n: int,
    profile: Path | None,
    auth0_latency_ms: int = 0,
) -> tuple[TenantProc, DaemonProc]:
    options: dict[str, Any] = {"interval": interval, "ciba_per_user_per_minute": None, "seed": 9}
    if auth0_latency_ms:  # a slow Auth0: every token-endpoint answer is delayed
        options["faults"] = {"latency_ms": auth0_latency_ms, "paths": ["/oauth/token"]}
    tenant = TenantProc(root / "tenant", options)
    try:
        config = tenant.daemon_config(
            sections={
                "daemon": {
                    "max_pending": n * 2,
                    "max_pending_per_caller": n * 2,
                    "ciba_starts_per_minute": n * 10,
                    "max_connections": 512,
                },
                "auth0": {"requested_expiry": expiry},
            },
            extra=BENCH_ACTION,
        )
        daemon = DaemonProc(
            config,
            root / "tenant" / "run" / "aegisd.sock",
            env=tenant.secrets_env_vars(),
            profile=profile,
        )
    except BaseException:
        tenant.close()
        raise
    return tenant, daemon


@dataclass
class Outcome:
    n: int
    pending_at: float | None = None
    done_at: float | None = None
    result: str = ""  # "granted" or an error code


async def drive(
    args: argparse.Namespace, tenant: TenantProc, daemon: DaemonProc, res: Result
) -> dict[str, Any]:
    import trio

    from aegisd.client import AegisClient, AegisError, PendingEvent

    outcomes = [Outcome(i) for i in range(args.n)]
    all_pending = trio.Event()
    n_pending = 0
    facts: dict[str, Any] = {}

    async def one(client: AegisClient, o: Outcome) -> None:
        nonlocal n_pending

        def on_pending(_: PendingEvent) -> None:
            nonlocal n_pending
            if o.pending_at is None:
                o.pending_at = time.monotonic()
                n_pending += 1
                if n_pending == args.n:
                    all_pending.set()

        try:
            await client.authorize("demo.bench", on_pending=on_pending, n=str(o.n))
            o.result = "granted"
        except AegisError as exc:
            o.result = exc.code
        o.done_at = time.monotonic()

    # idle baseline: nothing pending
    cpu0 = daemon.cpu_seconds()
    await trio.sleep(5.0)
    facts["idle_empty_cpu_pct"] = 100 * (daemon.cpu_seconds() - cpu0) / 5.0
    facts["rss_empty_mb"] = daemon.rss() / 2**20

    sampler = Sampler(daemon, tenant)
    sampler.start()
    t_start = time.monotonic()
    conns = 20
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(AegisClient(daemon.socket_path, connect_timeout=30))
            for _ in range(conns)
        ]
        async with trio.open_nursery() as nursery:
            for o in outcomes:
                nursery.start_soon(one, clients[o.n % conns], o)
            with trio.move_on_after(args.expiry) as cs:
                while not all_pending.is_set():
                    if all(o.done_at is not None for o in outcomes):
                        raise RuntimeError(
                            "every request ended before all were pending: "
                            + str(Counter(o.result for o in outcomes))
                        )
                    with trio.move_on_after(0.5):
                        await all_pending.wait()
            t_all = time.monotonic()
            facts["pending_reached"] = n_pending
            facts["start_seconds"] = t_all - t_start
            if cs.cancelled_caught:
                print(f"only {n_pending} of {args.n} requests became pending")
            print(f"{n_pending} pending after {t_all - t_start:.1f} s")
            status = await clients[0].status()
            facts["daemon_pending"] = status.pending
            # Watch the quiet phase: polls only.
            await trio.sleep(max(0.0, t_start + args.approve_at - time.monotonic()))
            quiet = [s for s in sampler.samples if t_all + 0.5 <= s.t]
            facts["quiet"] = quiet
            # Approve half on the phone, as a person would.
            ids = (await tenant.acall("pending"))["pending"]
            half = ids[: len(ids) // 2]
            answer = await tenant.acall("approve", ids=half)
            facts["approved_at"] = answer["t"]
            facts["approved"] = answer["done"]
            facts["approved_ids"] = half
            print(
                f"approved {answer['done']} at {answer['t'] - t_start:.1f} s; waiting for the rest"
            )
            with trio.move_on_after(args.expiry + 30):
                while any(o.done_at is None for o in outcomes):
                    await trio.sleep(0.25)
            nursery.cancel_scope.cancel()
    sampler.stop()
    facts["samples"] = sampler.samples
    facts["outcomes"] = outcomes
    facts["t_start"] = t_start
    return facts


def run(args: argparse.Namespace) -> Result:
    import trio

    res = Result("pending")
    root = Path(tempfile.mkdtemp(prefix="aegpd", dir="/tmp"))
    profile = Path(args.profile) / "pending" if args.profile else None
    tenant, daemon = start_stack(
        root,
        interval=args.interval,
        expiry=args.expiry,
        n=args.n,
        profile=profile,
        auth0_latency_ms=args.auth0_latency_ms,
    )
    try:
        facts = trio.run(drive, args, tenant, daemon, res)
        stats = tenant.call("stats")["stats"]
    finally:
        daemon.stop()
        tenant.close()
        daemon_log = daemon.stderr_text()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    outcomes: list[Outcome] = facts["outcomes"]
    samples: list[Sample] = facts["samples"]
    ideal = args.expiry / args.interval

    peak = max(s.rss for s in samples) / 2**20
    res.add(
        f"daemon RSS at peak, {args.n} pending",
        round(peak, 1),
        "MB",
        target=f"< {RSS_TARGET_MB:g} MB",
        met=peak < RSS_TARGET_MB,
        note=f"{facts['rss_empty_mb']:.1f} MB with nothing pending",
    )
    answered = Counter(o.result or "unanswered" for o in outcomes)
    all_answered = answered.get("unanswered", 0) == 0 and sum(answered.values()) == args.n
    res.add(
        "requests answered",
        f"{sum(v for k, v in answered.items() if k != 'unanswered')}/{args.n}",
        target="all",
        met=all_answered,
        note=", ".join(f"{k}: {v}" for k, v in sorted(answered.items())),
    )
    # polls per approval: the expired half ran their whole lifetime
    approved_at = facts["approved_at"]
    polls: dict[str, int] = stats["polls"]
    approved_ids = set(facts["approved_ids"])
    expired_ids = [rid for rid in polls if rid not in approved_ids]
    per_expired = [polls[r] for r in expired_ids] if expired_ids else []
    mean_polls = sum(per_expired) / len(per_expired) if per_expired else float("nan")
    dev = (mean_polls - ideal) / ideal
    res.add(
        "polls per expired approval (mean)",
        round(mean_polls, 2),
        "polls",
        target=f"within {POLL_TOLERANCE:.0%} of {args.expiry}/{args.interval:g} = {ideal:g}",
        # With a slow Auth0 the next poll is one interval after the *answer*, so fewer polls
        # fit (expiry / (interval + latency)): context there, not the target's measurement.
        met=abs(dev) <= POLL_TOLERANCE if not args.auth0_latency_ms else None,
        note=(
            f"{dev:+.1%} vs ideal; min {min(per_expired, default=0)}, "
            f"max {max(per_expired, default=0)}; slow_down answers: {stats['slow_downs']}"
        ),
    )
    res.add(
        "CIBA starts (bc-authorize) per request",
        round(stats["bc_authorize"] / args.n, 3),
        "",
        note="1.0 = one push per request, nothing retried or coalesced",
    )
    # CPU: poll-free slices during the quiet phase, and the cost of a poll
    quiet: list[Sample] = facts["quiet"]
    idle_cpu = idle_time = busy_cpu = 0.0
    busy_polls = 0
    for a, b in itertools.pairwise(quiet):
        dt, dcpu, dpolls = b.t - a.t, b.cpu - a.cpu, b.polls - a.polls
        if dpolls == 0 and b.starts == a.starts:
            idle_cpu += dcpu
            idle_time += dt
        else:
            busy_cpu += dcpu
            busy_polls += dpolls
    idle_pct = 100 * idle_cpu / idle_time if idle_time else float("nan")
    res.add(
        f"daemon CPU while idle, {args.n} pending (poll-free slices)",
        round(idle_pct, 2),
        "% of a core",
        target="near zero (≤ 1 %)",
        # with answers delayed, "no poll counted" does not mean "no poll in flight"
        met=idle_time > 0 and idle_pct <= 1.0 if not args.auth0_latency_ms else None,
        note=(
            f"over {idle_time:.1f} s of 0.25 s slices with no poll; "
            f"{facts['idle_empty_cpu_pct']:.2f} % with nothing pending"
        ),
    )
    per_poll_ms = 1000 * busy_cpu / busy_polls if busy_polls else float("nan")
    res.add("daemon CPU per poll", round(per_poll_ms, 3), "ms", note=f"{busy_polls} polls")
    window = _window(quiet, 5.0)
    if window is not None:
        w_cpu, w_polls = window
        res.add(
            f"daemon CPU over a 5 s window, {args.n} pending",
            round(w_cpu, 3),
            "CPU s",
            note=f"{w_polls} polls in the window (ideal {args.n * 5 / args.interval:.0f})",
        )
    lat = [
        o.done_at - approved_at for o in outcomes if o.result == "granted" and o.done_at is not None
    ]
    if lat:
        p95 = percentile(lat, 95)
        res.add(
            f"approval to credential p95, {len(lat)} approved at once",
            round(p95, 3),
            "s",
            target=f"≤ interval + 0.15 = {args.interval + 0.15:g} s",
            met=p95 <= args.interval + 0.15,
            note=f"p50 {percentile(lat, 50):.3f} s, max {max(lat):.3f} s",
        )
    # Anything the daemon complained about (Auth0 timeouts, retries) explains odd figures.
    complaints = Counter(
        line.split(": ", 1)[-1][:80]
        for line in daemon_log.splitlines()
        if (" WARNING " in line or " ERROR " in line) and "!!" not in line
    )
    res.add(
        "daemon warnings and errors logged",
        sum(complaints.values()),
        "lines",
        note="; ".join(f"{k} x{v}" for k, v in complaints.most_common(3)),
    )
    res.add(f"time to {args.n} pending", round(facts["start_seconds"], 2), "s")
    res.extra.update(
        {
            "n": args.n,
            "interval": args.interval,
            "expiry": args.expiry,
            "tenant_requests": stats["requests"],
            "daemon_pending_seen": facts["daemon_pending"],
            "auth0_latency_ms": args.auth0_latency_ms,
        }
    )
    if profile is not None:
        import json

        summary = json.loads(profile.with_suffix(".json").read_text())
        print(f"daemon profile: busy {summary['busy_s']} s of {summary['total_s']} s")
        for row in summary["top_self"][:15]:
            print(f"  {100 * row['share_of_busy']:5.1f}%  {row['function']}")
        print("  cumulative (s):", summary["cumulative"])
        res.extra["profile"] = summary
    return res


def _window(samples: list[Sample], seconds: float) -> tuple[float, int] | None:
    for i, a in enumerate(samples):
        for b in samples[i + 1 :]:
            if b.t - a.t >= seconds:
                return b.cpu - a.cpu, b.polls - a.polls
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--expiry", type=int, default=60)
    parser.add_argument("--approve-at", type=float, default=40.0, help="seconds after start")
    parser.add_argument("--profile", help="profile the daemon; write reports into this dir")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--auth0-latency-ms",
        type=int,
        default=0,
        help="delay every answer of the tenant's token endpoint (a slow Auth0)",
    )
    args = parser.parse_args()
    print(
        f"bench/pending.py: {args.n} approvals pending, interval {args.interval:g} s, "
        f"expiry {args.expiry} s"
    )
    run(args).emit()


if __name__ == "__main__":
    main()

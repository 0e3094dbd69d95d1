"""``aegisd.daemon.refusal_limit``: the per-peer refusal budget and its summaries (pure)."""

from __future__ import annotations

import trio

from aegisd.daemon.refusal_limit import RefusalGate, RefusalLimiter


def test_a_peer_gets_its_burst_then_one_per_interval() -> None:
    lim = RefusalLimiter(rate=2.0, burst=3)
    assert [lim.admit(1000, 42, now=0.0) for _ in range(5)] == [True, True, True, False, False]
    assert lim.admit(1000, 42, now=0.5)  # one token back after 1/rate seconds
    assert not lim.admit(1000, 42, now=0.5)
    assert lim.admit(1000, 43, now=0.5)  # another process has its own bucket


def test_all_peers_together_are_bounded_too() -> None:
    lim = RefusalLimiter(rate=1.0, burst=1)
    admitted = sum(lim.admit(1000, pid, now=0.0) for pid in range(100))
    assert admitted == 10  # ten peers' worth, however many processes there are


def test_rate_zero_disables_the_limit() -> None:
    lim = RefusalLimiter(rate=0.0, burst=1)
    assert all(lim.admit(1000, 42, now=0.0) for _ in range(1000))


def test_suppressed_refusals_are_summed_per_peer_and_code() -> None:
    lim = RefusalLimiter(rate=1.0, burst=1)
    for i in range(7):
        lim.suppress(
            {"pid": 42, "uid": 1000, "code": "unknown_action", "action": f"a{i % 2}"}, 100.0 + i
        )
    lim.suppress({"pid": 42, "uid": 1000, "code": "invalid_params", "action": "x"}, 200.0)
    rows = lim.drain()
    assert [(r.code, r.count) for r in rows] == [("unknown_action", 7), ("invalid_params", 1)]
    assert rows[0].fields()["actions"] == ["a0", "a1"]
    assert (rows[0].first, rows[0].last) == (100.0, 106.0)
    assert lim.suppressed_total == 8
    assert lim.drain() == []  # a new window


def test_many_distinct_peers_share_one_summary_row_past_the_cap() -> None:
    lim = RefusalLimiter(rate=1.0, burst=1)
    for pid in range(1000):
        lim.suppress({"pid": pid, "uid": 1000, "code": "peer_rejected"}, 1.0)
    rows = lim.drain()
    assert len(rows) <= 257
    assert sum(r.count for r in rows) == 1000


async def test_invalid_proposals_count_against_the_budget_and_a_stop_keeps_the_summary() -> None:
    written: list[tuple[str, dict[str, object]]] = []

    async def record(event: str, **fields: object) -> None:
        await trio.sleep(0)  # a real write yields (the fsync runs in a thread)
        written.append((event, fields))

    gate = RefusalGate(record, RefusalLimiter(rate=1.0, burst=2), wall=lambda: 5.0, interval=10)
    for _ in range(50):  # anyone can send garbage as a policy proposal
        await gate("policy_rejected", pid=7, uid=1000, reason="invalid", problems=["x"])
    await gate("policy_rejected", pid=7, uid=1000, code="approval_denied", reason="denied")
    assert [e for e, _ in written].count("policy_rejected") == 3  # burst 2 + the denial
    with trio.CancelScope() as scope:
        scope.cancel()  # the daemon is stopping
        await gate.flush()
    (summary,) = [f for e, f in written if e == "refusals_suppressed"]
    assert summary["count"] == 48 and summary["code"] == "policy_rejected"

"""The sans-IO CIBA machine: every transition-table entry, as plain synchronous tests.

Times are plain numbers; nothing here sleeps or does I/O. ``test_every_table_entry_is_covered``
fails if a table entry is added without a case in ``CASES``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegisd.auth0.ciba import (
    TRANSITIONS,
    Approved,
    Cancel,
    CibaMachine,
    CibaProtocolError,
    Deliver,
    Denied,
    Event,
    ExpiredToken,
    Fail,
    InvalidGrant,
    Malformed,
    OtherTerminal,
    Pending,
    PollAt,
    SendPoll,
    SlowDown,
    Started,
    State,
    Tick,
    TokenResponse,
    Unreachable,
    Withdraw,
)

TOKENS = TokenResponse(access_token="at", id_token="it", expires_in=60)


def idle() -> CibaMachine:
    return CibaMachine()


def waiting(expires_in: float = 120, interval: float | None = 5) -> CibaMachine:
    m = CibaMachine()
    assert m.handle(Started("req-1", expires_in, interval, now=0.0)) == [PollAt(interval or 5)]
    return m


def polling(expires_in: float = 120, interval: float | None = 5) -> CibaMachine:
    m = waiting(expires_in, interval)
    assert m.handle(Tick(m.next_poll_at or 0)) == [SendPoll()]
    return m


def approved() -> CibaMachine:
    m = polling()
    m.handle(Approved(5.0, TOKENS))
    return m


def failed() -> CibaMachine:
    m = polling()
    m.handle(Denied(5.0))
    return m


def cancelled() -> CibaMachine:
    m = waiting()
    m.handle(Cancel())
    return m


# ---- one case per table entry ---------------------------------------------------------------
# Each case: (state, event type, build machine, event, expected actions, expected state).

Case = tuple[State, type[Event], Callable[[], CibaMachine], Event, list[object], State]

CASES: list[Case] = [
    (State.IDLE, Started, idle, Started("r", 120, 5, now=10.0), [PollAt(15.0)], State.WAITING),
    (State.IDLE, Cancel, idle, Cancel(), [Fail("cancelled")], State.CANCELLED),
    (State.WAITING, Tick, waiting, Tick(5.0), [SendPoll()], State.POLLING),
    (State.WAITING, Cancel, waiting, Cancel(), [Withdraw(), Fail("cancelled")], State.CANCELLED),
    (State.POLLING, Tick, polling, Tick(6.0), [], State.POLLING),
    (State.POLLING, Cancel, polling, Cancel(), [Withdraw(), Fail("cancelled")], State.CANCELLED),
    (State.POLLING, Pending, polling, Pending(5.5), [PollAt(10.5)], State.WAITING),
    (State.POLLING, SlowDown, polling, SlowDown(5.5), [PollAt(15.5)], State.WAITING),
    (State.POLLING, Unreachable, polling, Unreachable(6.0), [PollAt(11.0)], State.WAITING),
    (State.POLLING, Approved, polling, Approved(5.5, TOKENS), [Deliver(TOKENS)], State.APPROVED),
    (State.POLLING, Denied, polling, Denied(5.5), [Fail("approval_denied")], State.FAILED),
    (
        State.POLLING,
        ExpiredToken,
        polling,
        ExpiredToken(5.5),
        [Fail("approval_expired")],
        State.FAILED,
    ),
    (
        State.POLLING,
        InvalidGrant,
        polling,
        InvalidGrant(5.5),
        [Fail("approval_unavailable")],
        State.FAILED,
    ),
    (
        State.POLLING,
        OtherTerminal,
        polling,
        OtherTerminal(5.5, "invalid_client"),
        [Fail("approval_unavailable")],
        State.FAILED,
    ),
    (State.POLLING, Malformed, polling, Malformed(5.5), [Fail("upstream_error")], State.FAILED),
    (State.APPROVED, Tick, approved, Tick(500.0), [], State.APPROVED),
    (State.APPROVED, Cancel, approved, Cancel(), [], State.APPROVED),
    (State.FAILED, Tick, failed, Tick(500.0), [], State.FAILED),
    (State.FAILED, Cancel, failed, Cancel(), [], State.FAILED),
    (State.CANCELLED, Tick, cancelled, Tick(500.0), [], State.CANCELLED),
    (State.CANCELLED, Cancel, cancelled, Cancel(), [], State.CANCELLED),
]


@pytest.mark.parametrize(
    ("state", "event_type", "build", "event", "actions", "after"),
    CASES,
    ids=[f"{c[0].name}-{c[1].__name__}" for c in CASES],
)
def test_table_entry(
    state: State,
    event_type: type[Event],
    build: Callable[[], CibaMachine],
    event: Event,
    actions: list[object],
    after: State,
) -> None:
    m = build()
    assert m.state is state
    assert type(event) is event_type
    assert m.handle(event) == actions
    assert m.state is after


def test_every_table_entry_is_covered() -> None:
    table = {(s, e) for s, row in TRANSITIONS.items() for e in row}
    covered = {(c[0], c[1]) for c in CASES}
    assert covered == table


# ---- the rules in detail --------------------------------------------------------------------


def test_missing_interval_defaults_to_five_seconds() -> None:
    m = CibaMachine()
    assert m.handle(Started("r", 120, None, now=100.0)) == [PollAt(105.0)]
    assert m.interval == 5.0


@pytest.mark.parametrize("bad", [0, -3])
def test_nonpositive_interval_falls_back_to_default(bad: float) -> None:
    m = CibaMachine()
    assert m.handle(Started("r", 120, bad, now=0.0)) == [PollAt(5.0)]


def test_tiny_interval_is_raised_to_a_tenth_of_a_second() -> None:
    m = CibaMachine()
    assert m.handle(Started("r", 120, 0.001, now=0.0)) == [PollAt(0.1)]
    m = CibaMachine()
    assert m.handle(Started("r", 120, 0.2, now=0.0)) == [PollAt(0.2)]


def test_started_already_expired_fails_without_polling() -> None:
    m = CibaMachine()
    assert m.handle(Started("r", 0, 5, now=0.0)) == [Withdraw(), Fail("approval_expired")]
    assert m.state is State.FAILED


def test_early_tick_reschedules_instead_of_polling() -> None:
    m = waiting()
    assert m.handle(Tick(3.0)) == [PollAt(5.0)]
    assert m.state is State.WAITING
    assert m.polls == 0


def test_tick_at_deadline_while_waiting_expires() -> None:
    m = waiting(expires_in=120)
    assert m.handle(Tick(120.0)) == [Withdraw(), Fail("approval_expired")]
    assert m.state is State.FAILED


def test_no_second_poll_while_one_is_in_flight() -> None:
    m = polling()
    for t in (6.0, 10.0, 50.0, 119.9):
        assert m.handle(Tick(t)) == []
    assert m.polls == 1
    assert m.state is State.POLLING


def test_poll_in_flight_at_deadline_is_abandoned() -> None:
    m = polling(expires_in=120)
    assert m.handle(Tick(120.0)) == [Withdraw(), Fail("approval_expired")]


@pytest.mark.parametrize(
    "answer",
    [
        Pending(1.0),
        SlowDown(1.0),
        Approved(1.0, TOKENS),
        Denied(1.0),
        ExpiredToken(1.0),
        InvalidGrant(1.0),
        OtherTerminal(1.0, "x"),
        Malformed(1.0),
        Unreachable(1.0),
    ],
)
def test_answer_without_outstanding_poll_is_refused(answer: Event) -> None:
    with pytest.raises(CibaProtocolError):
        waiting().handle(answer)
    with pytest.raises(CibaProtocolError):
        idle().handle(answer)
    with pytest.raises(CibaProtocolError):
        approved().handle(answer)


def test_started_twice_and_tick_before_start_are_refused() -> None:
    with pytest.raises(CibaProtocolError):
        waiting().handle(Started("r", 120, 5, now=0.0))
    with pytest.raises(CibaProtocolError):
        idle().handle(Tick(1.0))


def test_pending_after_deadline_expires() -> None:
    m = polling(expires_in=120)
    assert m.handle(Pending(121.0)) == [Withdraw(), Fail("approval_expired")]


def test_wakeup_never_later_than_deadline() -> None:
    m = polling(expires_in=7, interval=5)
    assert m.handle(Pending(5.0)) == [PollAt(7.0)]
    assert m.handle(Tick(7.0)) == [Withdraw(), Fail("approval_expired")]
    assert m.polls == 1


def test_slow_down_grows_by_at_least_five_seconds_and_sticks() -> None:
    m = polling(interval=5)
    assert m.handle(SlowDown(5.0)) == [PollAt(15.0)]
    assert m.interval == 10.0
    m.handle(Tick(15.0))
    # a later pending keeps the grown interval
    assert m.handle(Pending(15.0)) == [PollAt(25.0)]


def test_slow_down_takes_retry_after_when_larger() -> None:
    m = polling(interval=5)
    assert m.handle(SlowDown(5.0, retry_after=30.0, body_interval=10.0)) == [PollAt(35.0)]
    assert m.interval == 30.0


def test_slow_down_takes_body_interval_when_larger() -> None:
    m = polling(interval=5)
    assert m.handle(SlowDown(5.0, retry_after=2.0, body_interval=20.0)) == [PollAt(25.0)]
    assert m.interval == 20.0


def test_repeated_slow_down_keeps_growing() -> None:
    m = polling(expires_in=300, interval=5)
    t = 5.0
    for expected in (10.0, 15.0, 20.0):
        m.handle(SlowDown(t))
        assert m.interval == expected
        t += expected
        assert m.handle(Tick(t)) == [SendPoll()]


def test_slow_down_after_deadline_expires() -> None:
    m = polling(expires_in=120)
    assert m.handle(SlowDown(120.0)) == [Withdraw(), Fail("approval_expired")]


def test_unreachable_keeps_interval() -> None:
    m = polling(interval=5)
    m.handle(Unreachable(5.0))
    assert m.interval == 5.0


def test_unreachable_after_deadline_expires() -> None:
    m = polling(expires_in=120)
    assert m.handle(Unreachable(130.0)) == [Withdraw(), Fail("approval_expired")]


def test_access_denied_before_deadline_is_denial_after_is_expiry() -> None:
    before = polling(expires_in=120)
    assert before.handle(Denied(119.9)) == [Fail("approval_denied")]
    after = polling(expires_in=120)
    assert after.handle(Denied(120.0)) == [Fail("approval_expired")]


def test_invalid_grant_after_deadline_is_expiry() -> None:
    m = polling(expires_in=120)
    assert m.handle(InvalidGrant(120.0)) == [Fail("approval_expired")]


def test_tokens_arriving_after_deadline_are_still_delivered() -> None:
    m = polling(expires_in=120)
    assert m.handle(Approved(120.5, TOKENS)) == [Deliver(TOKENS)]


def test_token_response_repr_hides_tokens() -> None:
    t = TokenResponse(
        access_token="secret-at", id_token="secret-it", expires_in=1, refresh_token="rt"
    )
    assert "secret" not in repr(t) and "rt'" not in repr(t)
    assert "req-xyz" not in repr(Started("req-xyz", 1, 1, now=0))


def test_poll_count_is_expiry_over_interval() -> None:
    m = CibaMachine()
    actions = m.handle(Started("r", 120, 5, now=0.0))
    sends: list[float] = []
    now = 0.0
    while actions:
        action = actions.pop(0)
        if isinstance(action, PollAt):
            now = action.when
            actions += m.handle(Tick(now))
        elif isinstance(action, SendPoll):
            sends.append(now)
            actions += m.handle(Pending(now))
        elif isinstance(action, Fail):
            assert action.code == "approval_expired"
    assert sends == [5.0 * i for i in range(1, 24)]  # 5 … 115; nothing at the deadline


# ---- property: whatever Auth0 answers, the machine keeps the polling rules ----------------

answers = st.sampled_from(["pending", "slow_down", "unreachable"])


@settings(max_examples=200, deadline=None)
@given(
    interval=st.one_of(st.none(), st.floats(min_value=0.05, max_value=30)),
    expires_in=st.floats(min_value=1, max_value=300),
    script=st.lists(
        st.tuples(answers, st.floats(min_value=0, max_value=5), st.floats(0, 40)), max_size=60
    ),
)
def test_polling_rules_hold_for_any_answer_script(
    interval: float | None, expires_in: float, script: list[tuple[str, float, float]]
) -> None:
    m = CibaMachine()
    actions = m.handle(Started("r", expires_in, interval, now=0.0))
    assert m.deadline == expires_in
    now = 0.0
    last_answer_at: float | None = None
    in_flight = False
    steps = iter(script)
    while actions:
        action = actions.pop(0)
        if isinstance(action, PollAt):
            assert action.when <= m.deadline
            now = max(now, action.when)
            actions += m.handle(Tick(now))
        elif isinstance(action, SendPoll):
            assert not in_flight
            assert now < m.deadline  # never a poll at or after the deadline
            if last_answer_at is not None:
                assert now - last_answer_at >= m.interval - 1e-9
            in_flight = True
            step = next(steps, None)
            if step is None:
                return
            kind, latency, retry_after = step
            now += latency
            in_flight = False
            last_answer_at = now
            before = m.interval
            if kind == "pending":
                actions += m.handle(Pending(now))
            elif kind == "unreachable":
                actions += m.handle(Unreachable(now))
            else:
                actions += m.handle(SlowDown(now, retry_after=retry_after))
                if m.state is State.WAITING:
                    assert m.interval >= before + 5
        elif isinstance(action, Fail):
            assert action.code == "approval_expired"
            assert now >= m.deadline
        else:
            assert isinstance(action, Withdraw)

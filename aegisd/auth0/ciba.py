"""The CIBA poll flow as a sans-IO state machine (h11 style).

Rules of this module (keep them):

* Everything that decides *when* to poll, *when* to give up and *what an answer means* lives
  here, in ``TRANSITIONS`` (data) and the small rule methods it names. The driver
  (``backchannel.py``) only sleeps, sends and feeds answers back.
* No I/O, no clock reads, no sleeping: every event that needs the time carries ``now``
  (seconds on one monotonic clock, the driver uses ``trio.current_time()``).
* Answers are classified by the OAuth ``error`` field, never by HTTP status
  (``reference/auth0-protocol.md`` §2); the driver maps the wire to the events below.

Protocol facts encoded here (reference §2): wait ``interval`` between polls (5 s when Auth0
names none); on ``slow_down`` the interval becomes max(Retry-After, body ``interval``,
old + 5 s) for this and every later poll; ``authorization_pending`` keeps going;
``access_denied`` means "denied *or* expired" at Auth0, so the local deadline tells them
apart; ``expired_token`` and ``invalid_grant`` are terminal; at most one poll is in flight;
nothing is sent at or after the local deadline.

Inputs (events): ``Started``, the poll answers (``Pending``, ``SlowDown``, ``Approved``,
``Denied``, ``ExpiredToken``, ``InvalidGrant``, ``OtherTerminal``, ``Malformed``,
``Unreachable``), ``Tick`` and ``Cancel``. Outputs (actions): ``PollAt(when)`` (sleep until
``when``, then feed ``Tick``), ``SendPoll`` (send exactly one poll now), ``Deliver(tokens)``,
``Fail(code)`` and ``Withdraw`` (stop using this ``auth_req_id``: abandon any poll in
flight, send nothing more; Auth0 has no endpoint to cancel a CIBA request, so the push stays
on the phone until it expires).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, final

__all__ = [
    "DEFAULT_INTERVAL",
    "SLOW_DOWN_STEP",
    "TRANSITIONS",
    "Action",
    "Approved",
    "Cancel",
    "CibaMachine",
    "CibaProtocolError",
    "Deliver",
    "Denied",
    "Event",
    "ExpiredToken",
    "Fail",
    "FailCode",
    "InvalidGrant",
    "Malformed",
    "OtherTerminal",
    "Pending",
    "PollAnswer",
    "PollAt",
    "Rule",
    "SendPoll",
    "SlowDown",
    "Started",
    "State",
    "Tick",
    "TokenResponse",
    "Unreachable",
    "Withdraw",
]

DEFAULT_INTERVAL: Final = 5.0  # reference §2: "wait at least interval seconds (≈5 s)"
SLOW_DOWN_STEP: Final = 5.0  # CIBA Core: increase by at least 5 s on slow_down
_MIN_INTERVAL: Final = 0.1  # never hammer, whatever a broken answer says (dev tenants go low)

FailCode = Literal[
    "approval_denied", "approval_expired", "approval_unavailable", "upstream_error", "cancelled"
]


class CibaProtocolError(Exception):
    """The driver fed an event the current state does not allow (a bug in the driver).

    This is h11's ``LocalProtocolError``: e.g. a poll answer while no poll is outstanding.
    """


class State(enum.Enum):
    """Where one CIBA request stands."""

    IDLE = "idle"  # not started
    WAITING = "waiting"  # a poll is scheduled; none is in flight
    POLLING = "polling"  # exactly one poll is in flight
    APPROVED = "approved"  # tokens delivered (terminal)
    FAILED = "failed"  # denied, expired, refused or garbled (terminal)
    CANCELLED = "cancelled"  # withdrawn by the caller (terminal)


# ---- events ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class TokenResponse:
    """The ``/oauth/token`` success body of an approved CIBA request (reference §2).

    Tokens are hidden from ``repr``. ``id_token`` is ``None`` only when Auth0 sent none (a
    RAR approval may lack it, reference §11; the driver refuses that for other requests).
    """

    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)
    expires_in: float
    token_type: str = "Bearer"
    scope: str = ""
    refresh_token: str | None = field(default=None, repr=False)
    authorization_details: list[dict[str, object]] | None = field(default=None, repr=False)


@final
@dataclass(frozen=True)
class Started:
    """``/bc-authorize`` answered. ``interval`` is ``None`` when Auth0 named none.

    ``now`` is the time just *before* the request was sent, so the local deadline
    ``now + expires_in`` is never later than Auth0's own.
    """

    auth_req_id: str = field(repr=False)
    expires_in: float
    interval: float | None
    now: float


@final
@dataclass(frozen=True)
class Tick:
    """The driver woke up (at a ``PollAt`` time, or to check the deadline)."""

    now: float


@final
@dataclass(frozen=True)
class Cancel:
    """The caller withdrew the request (disconnect, ``aegisctl cancel``, ``lock``)."""


@final
@dataclass(frozen=True)
class Pending:
    """``error = authorization_pending``."""

    now: float


@final
@dataclass(frozen=True)
class SlowDown:
    """``error = slow_down`` (or a 429 ``too_many_requests`` on a poll).

    Attributes:
        retry_after: the ``Retry-After`` header (or ``x-ratelimit-reset`` distance) in s.
        body_interval: the ``interval`` field of the body, when present.
    """

    now: float
    retry_after: float | None = None
    body_interval: float | None = None


@final
@dataclass(frozen=True)
class Approved:
    """A 200 with tokens."""

    now: float
    tokens: TokenResponse


@final
@dataclass(frozen=True)
class Denied:
    """``error = access_denied``: denied, or expired (Auth0 uses one code for both)."""

    now: float


@final
@dataclass(frozen=True)
class ExpiredToken:
    """``error = expired_token`` (CIBA Core; Auth0 does not document it, handled anyway)."""

    now: float


@final
@dataclass(frozen=True)
class InvalidGrant:
    """``error = invalid_grant``: the ``auth_req_id`` is unknown, used up or expired."""

    now: float


@final
@dataclass(frozen=True)
class OtherTerminal:
    """Any other OAuth error (``invalid_client``, ``unauthorized_client``, ...).

    ``error`` is the OAuth code (already checked to be a short token by the driver).
    """

    now: float
    error: str


@final
@dataclass(frozen=True)
class Malformed:
    """A 2xx/4xx answer that is not usable JSON or lacks required fields."""

    now: float


@final
@dataclass(frozen=True)
class Unreachable:
    """The poll got no answer (network error, timeout) or a 5xx: try again next interval."""

    now: float


PollAnswer = (
    Pending
    | SlowDown
    | Approved
    | Denied
    | ExpiredToken
    | InvalidGrant
    | OtherTerminal
    | Malformed
    | Unreachable
)
Event = Started | Tick | Cancel | PollAnswer


# ---- actions --------------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class PollAt:
    """Sleep until ``when`` (same clock as ``now``), then feed ``Tick``."""

    when: float


@final
@dataclass(frozen=True)
class SendPoll:
    """Send one poll now and feed its answer back."""


@final
@dataclass(frozen=True)
class Deliver:
    """The person approved; these are the tokens (ID token still to be verified)."""

    tokens: TokenResponse


@final
@dataclass(frozen=True)
class Fail:
    """The request ended without tokens."""

    code: FailCode


@final
@dataclass(frozen=True)
class Withdraw:
    """Stop using the ``auth_req_id``: abandon a poll in flight, send nothing more."""


Action = PollAt | SendPoll | Deliver | Fail | Withdraw


# ---- the transition table -------------------------------------------------------------------


class Rule(enum.Enum):
    """What a (state, event) pair does; each names one method of ``CibaMachine``.

    The possible next states of each rule are listed in its comment.
    """

    START = "start"  # -> WAITING, or FAILED if expires_in <= 0
    CANCEL_BEFORE_START = "cancel_before_start"  # -> CANCELLED
    WAKE = "wake"  # -> WAITING (too early), POLLING (due), FAILED (deadline)
    WITHDRAW = "withdraw"  # -> CANCELLED
    PENDING = "pending"  # -> WAITING, or FAILED at/after the deadline
    SLOW_DOWN = "slow_down"  # -> WAITING with a larger interval, or FAILED at the deadline
    UNREACHABLE = "unreachable"  # -> WAITING (same interval), or FAILED at the deadline
    APPROVED = "approved"  # -> APPROVED
    DENIED = "denied"  # -> FAILED (denied before the deadline, expired after)
    EXPIRED = "expired"  # -> FAILED (expired)
    INVALID_GRANT = "invalid_grant"  # -> FAILED (unavailable before the deadline, else expired)
    OTHER_TERMINAL = "other_terminal"  # -> FAILED (unavailable)
    MALFORMED = "malformed"  # -> FAILED (upstream_error)
    DEADLINE_CHECK = "deadline_check"  # POLLING: -> FAILED at the deadline, else stay
    IGNORE = "ignore"  # terminal states: Tick/Cancel change nothing


_S = State
_ANSWER_RULES: Final[dict[type[Event], Rule]] = {
    Pending: Rule.PENDING,
    SlowDown: Rule.SLOW_DOWN,
    Unreachable: Rule.UNREACHABLE,
    Approved: Rule.APPROVED,
    Denied: Rule.DENIED,
    ExpiredToken: Rule.EXPIRED,
    InvalidGrant: Rule.INVALID_GRANT,
    OtherTerminal: Rule.OTHER_TERMINAL,
    Malformed: Rule.MALFORMED,
}

#: state -> event type -> rule. A pair that is missing is a driver bug (``CibaProtocolError``):
#: e.g. a poll answer in WAITING would mean two polls were in flight, or one was invented.
TRANSITIONS: Final[Mapping[State, Mapping[type[Event], Rule]]] = MappingProxyType(
    {
        _S.IDLE: MappingProxyType({Started: Rule.START, Cancel: Rule.CANCEL_BEFORE_START}),
        _S.WAITING: MappingProxyType({Tick: Rule.WAKE, Cancel: Rule.WITHDRAW}),
        _S.POLLING: MappingProxyType(
            {Tick: Rule.DEADLINE_CHECK, Cancel: Rule.WITHDRAW, **_ANSWER_RULES}
        ),
        _S.APPROVED: MappingProxyType({Tick: Rule.IGNORE, Cancel: Rule.IGNORE}),
        _S.FAILED: MappingProxyType({Tick: Rule.IGNORE, Cancel: Rule.IGNORE}),
        _S.CANCELLED: MappingProxyType({Tick: Rule.IGNORE, Cancel: Rule.IGNORE}),
    }
)


@final
class CibaMachine:
    """One CIBA request's polling state. Feed events with ``handle``; act on what it returns.

    Attributes (read-only for the driver):
        state: the current ``State``.
        interval: the current polling interval in seconds.
        deadline: the local deadline (``Started.now + expires_in``), ``None`` before start.
        next_poll_at: when the next poll is due, ``None`` when none is scheduled.
        polls: how many polls the machine has let through.
    """

    def __init__(self) -> None:
        self.state = State.IDLE
        self.interval = DEFAULT_INTERVAL
        self.deadline: float | None = None
        self.next_poll_at: float | None = None
        self.polls = 0

    def handle(self, event: Event) -> list[Action]:
        """Apply one event and return the actions to perform, in order.

        Raises:
            CibaProtocolError: the event is not allowed in the current state.
        """
        rule = TRANSITIONS[self.state].get(type(event))
        if rule is None:
            raise CibaProtocolError(
                f"{type(event).__name__} is not allowed in state {self.state.name}"
            )
        return self._apply(rule, event)

    # The rules. Each sets the next state and returns the actions.

    def _apply(self, rule: Rule, event: Event) -> list[Action]:
        match rule, event:
            case Rule.START, Started():
                return self._start(event)
            case Rule.CANCEL_BEFORE_START, Cancel():
                self.state = State.CANCELLED
                return [Fail("cancelled")]
            case Rule.WAKE, Tick():
                return self._wake(event.now)
            case Rule.WITHDRAW, Cancel():
                self.state = State.CANCELLED
                self.next_poll_at = None
                return [Withdraw(), Fail("cancelled")]
            case Rule.DEADLINE_CHECK, Tick():
                if self._past_deadline(event.now):
                    return self._expire()
                return []
            case Rule.PENDING, Pending():
                return self._schedule(event.now)
            case Rule.UNREACHABLE, Unreachable():
                return self._schedule(event.now)
            case Rule.SLOW_DOWN, SlowDown():
                self.interval = max(
                    event.retry_after or 0.0,
                    event.body_interval or 0.0,
                    self.interval + SLOW_DOWN_STEP,
                )
                return self._schedule(event.now)
            case Rule.APPROVED, Approved():
                # Tokens that arrive are the person's answer, even if the reply crossed the
                # deadline on the wire: Auth0 only issues them for an approval in time.
                self.state = State.APPROVED
                return [Deliver(event.tokens)]
            case Rule.DENIED, Denied():
                # Auth0: "denied the authorization request or it has been expired". Our
                # deadline starts before the request was sent, so before it, it is a denial.
                return self._finish(
                    "approval_expired" if self._past_deadline(event.now) else "approval_denied"
                )
            case Rule.EXPIRED, ExpiredToken():
                return self._finish("approval_expired")
            case Rule.INVALID_GRANT, InvalidGrant():
                return self._finish(
                    "approval_expired" if self._past_deadline(event.now) else "approval_unavailable"
                )
            case Rule.OTHER_TERMINAL, OtherTerminal():
                return self._finish("approval_unavailable")
            case Rule.MALFORMED, Malformed():
                return self._finish("upstream_error")
            case Rule.IGNORE, _:
                return []
        raise CibaProtocolError(f"rule {rule.name} does not take {type(event).__name__}")

    def _start(self, event: Started) -> list[Action]:
        self.deadline = event.now + event.expires_in
        if event.interval is not None and event.interval > 0:
            self.interval = max(float(event.interval), _MIN_INTERVAL)
        if event.expires_in <= 0:
            self.state = State.FAILED
            return [Withdraw(), Fail("approval_expired")]
        self.state = State.WAITING
        return self._plan(event.now)

    def _wake(self, now: float) -> list[Action]:
        if self._past_deadline(now):
            return self._expire()
        assert self.next_poll_at is not None
        if now < self.next_poll_at:
            return [PollAt(self._wake_time())]
        self.state = State.POLLING
        self.next_poll_at = None
        self.polls += 1
        return [SendPoll()]

    def _schedule(self, now: float) -> list[Action]:
        """After a non-final answer: the next poll is one interval after the answer."""
        if self._past_deadline(now):
            return self._expire()
        self.state = State.WAITING
        return self._plan(now)

    def _plan(self, now: float) -> list[Action]:
        self.next_poll_at = now + self.interval
        return [PollAt(self._wake_time())]

    def _wake_time(self) -> float:
        # Never sleep past the deadline: wake at it to end the request on time.
        assert self.next_poll_at is not None and self.deadline is not None
        return min(self.next_poll_at, self.deadline)

    def _past_deadline(self, now: float) -> bool:
        assert self.deadline is not None
        return now >= self.deadline

    def _expire(self) -> list[Action]:
        self.state = State.FAILED
        self.next_poll_at = None
        return [Withdraw(), Fail("approval_expired")]

    def _finish(self, code: FailCode) -> list[Action]:
        self.state = State.FAILED
        self.next_poll_at = None
        return [Fail(code)]

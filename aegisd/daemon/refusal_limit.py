"""Refusals that anyone can cause cost the log a bounded number of records.

A request for an unknown action, from a process no rule matches, or with bad parameters is
refused before anything reaches the person or an API, and costs the client nothing; without
a limit a flooding peer made 504k fsynced refusal records in 105 s (issue 13, finding 3). Here
each peer (uid, pid) has a token bucket (``[audit] refusals_per_second``, ``refusal_burst``),
all peers together one ten times as large; a refusal beyond it is counted, and every
``summary_interval`` the counts are written as one ``refusals_suppressed`` record per (peer,
code) with the count, the window and a few of the action names asked for.

Owns ``RefusalLimiter`` (pure: ``now`` is an argument) and ``RefusalGate``, the audit callable
the daemon hands to everything that records: it passes every record through except limited
refusals over budget. The client's answer is never changed (it still gets its typed error);
only the record is folded into a summary. Refusals after a person or an upstream was involved
(denied, expired, upstream errors, reflection) are never limited: the push budget bounds them.
It must not decide whether a request is refused, nor drop any other record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

__all__ = ["LIMITED_CODES", "RefusalGate", "RefusalLimiter", "Summary"]

log = logging.getLogger(__name__)

# refusals a client can cause at will, before any person or upstream is involved
LIMITED_CODES: Final = frozenset(
    {
        "bad_request",
        "caller_not_allowed",
        "frame_too_large",
        "invalid_params",
        "not_found",
        "peer_rejected",
        "policy_denied",
        "rate_limited",
        "unknown_action",
    }
)
_GLOBAL_FACTOR: Final = 10  # all peers together: this many peers' worth
_MAX_PEERS: Final = 4096  # buckets kept; full (idle) ones are dropped first
_MAX_SUMMARIES: Final = 256  # (peer, code) rows per window; the rest share one row
_SAMPLE_ACTIONS: Final = 5


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Summary:
    """Refusals of one (peer, code) that were counted instead of recorded."""

    pid: int | None
    uid: int | None
    code: str
    exe: str | None = None
    caller: str | None = None
    count: int = 0
    first: float = 0.0  # wall clock
    last: float = 0.0
    actions: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "uid": self.uid,
            "exe": self.exe,
            "caller": self.caller,
            "code": self.code,
            "count": self.count,
            "since": round(self.first, 6),
            "until": round(self.last, 6),
            "actions": self.actions,
        }


class RefusalLimiter:
    """Token buckets per peer and for all peers; pure.

    Args:
        rate: refusals per second one peer may have recorded one by one (0: no limit).
        burst: how many it may have recorded at once after being quiet.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._peers: dict[tuple[int, int], _Bucket] = {}
        self._all: _Bucket | None = None
        self._summaries: dict[tuple[int | None, int | None, str], Summary] = {}
        self.suppressed_total = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _take(self, bucket: _Bucket, rate: float, burst: float, now: float) -> bool:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def admit(self, uid: int | None, pid: int | None, now: float) -> bool:
        """True: record this refusal; False: count it (``suppress``)."""
        if not self.enabled:
            return True
        key = (-1 if uid is None else uid, -1 if pid is None else pid)
        bucket = self._peers.get(key)
        if bucket is None:
            if len(self._peers) >= _MAX_PEERS:
                self._forget_idle(now)
            bucket = self._peers[key] = _Bucket(float(self.burst), now)
        if self._all is None:
            self._all = _Bucket(float(self.burst * _GLOBAL_FACTOR), now)
        if not self._take(bucket, self.rate, self.burst, now):
            return False
        if not self._take(self._all, self.rate * _GLOBAL_FACTOR, self.burst * _GLOBAL_FACTOR, now):
            bucket.tokens += 1.0  # not this peer's fault: give its token back
            return False
        return True

    def _forget_idle(self, now: float) -> None:
        for key, b in list(self._peers.items()):
            if b.tokens + (now - b.at) * self.rate >= self.burst:
                del self._peers[key]
        while len(self._peers) >= _MAX_PEERS:  # all busy: drop the oldest-touched
            del self._peers[min(self._peers, key=lambda k: self._peers[k].at)]

    def suppress(self, fields: dict[str, object], wall: float) -> None:
        """Count one refusal that was not recorded (``fields`` as it would have been)."""
        pid, uid = _int(fields.get("pid")), _int(fields.get("uid"))
        code = str(fields.get("code") or fields.get("event") or "?")
        key: tuple[int | None, int | None, str] = (pid, uid, code)
        if key not in self._summaries and len(self._summaries) >= _MAX_SUMMARIES:
            key = (None, None, "*")  # too many distinct peers in one window: one shared row
        row = self._summaries.get(key)
        if row is None:
            exe, caller = fields.get("exe"), fields.get("caller")
            row = self._summaries[key] = Summary(
                pid=key[0],
                uid=key[1],
                code=key[2],
                exe=str(exe)[:256] if exe and key[2] != "*" else None,
                caller=str(caller) if caller and key[2] != "*" else None,
                first=wall,
            )
        row.count += 1
        row.last = wall
        action = fields.get("action")
        sample = action[:64] if isinstance(action, str) else None
        if sample is not None and len(row.actions) < _SAMPLE_ACTIONS and sample not in row.actions:
            row.actions.append(sample)
        self.suppressed_total += 1

    def drain(self) -> list[Summary]:
        """The window's summaries, oldest first; the window starts again empty."""
        rows = sorted(self._summaries.values(), key=lambda r: r.first)
        self._summaries = {}
        return rows


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Record(Protocol):
    async def __call__(self, event: str, **fields: object) -> None: ...


class RefusalGate:
    """The audit callable: records everything, except limited refusals over budget.

    Args:
        record: the real recorder (group commit).
        limiter: the buckets.
        wall: the wall clock for the summaries' window (the daemon's ``now``).
        interval: seconds between summary flushes.
    """

    def __init__(
        self,
        record: _Record,
        limiter: RefusalLimiter,
        *,
        wall: Callable[[], float],
        interval: float,
    ) -> None:
        self._record = record
        self.limiter = limiter
        self._wall = wall
        self.interval = interval
        self.peers_suppressed: set[tuple[int | None, int | None]] = set()

    async def __call__(self, event: str, **fields: object) -> None:
        if self._limited(event, fields) and not self.limiter.admit(
            _int(fields.get("uid")), _int(fields.get("pid")), trio.current_time()
        ):
            self.limiter.suppress(dict(fields, event=event), self._wall())
            if len(self.peers_suppressed) < 4096:
                self.peers_suppressed.add((_int(fields.get("pid")), _int(fields.get("uid"))))
            return
        await self._record(event, **fields)

    @staticmethod
    def _limited(event: str, fields: dict[str, object]) -> bool:
        if event == "peer_rejected":
            return True
        if event == "policy_rejected":  # an invalid proposal text: anyone can send one
            return fields.get("reason") == "invalid"
        return event == "refused" and fields.get("code") in LIMITED_CODES

    async def flush(self) -> None:
        """Write the window's summaries (durable, like the refusals they stand for).

        Shielded: the rows are already taken from the limiter, so a stop arriving halfway
        must not cancel the writes and lose the rest."""
        rows = self.limiter.drain()
        with trio.CancelScope(shield=True):
            for row in rows:
                await self._record("refusals_suppressed", **row.fields())

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every ``interval`` until cancelled; the daemon flushes once more at stop."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            await self.flush()

"""Admission decisions of ``aegisd.daemon.conn_limits`` (issue 13 finding 7), without sockets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aegisd.config import CallerRule, DaemonConfig
from aegisd.daemon.conn_limits import ConnectionLimits
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import RateLimited

RULE = CallerRule(name="agent", argv=["*aegis-mcp*"], actions=["demo.*"])


@dataclass
class FakeConn:
    conn_id: int
    peer: PeerIdentity | None
    rule: CallerRule | None
    idle: float | None = 0.0
    evicted: bool = False

    @property
    def idle_since(self) -> float | None:
        return self.idle

    def evict(self) -> None:
        self.evicted = True


def conn(n: int, *, pid: int, uid: int = 1000, matched: bool, idle: float | None = 0.0) -> FakeConn:
    peer = PeerIdentity(uid=uid, gid=uid, pid=pid, start_time=7)
    return FakeConn(n, peer, RULE if matched else None, idle)


def limits(**cfg: object) -> ConnectionLimits:
    settings = DaemonConfig(**cfg)  # type: ignore[arg-type]
    return ConnectionLimits(lambda: settings)


def test_one_process_is_capped_and_told_which_key() -> None:
    lim = limits(max_connections_per_peer=2)
    lim.admit(conn(1, pid=10, matched=True))
    lim.admit(conn(2, pid=10, matched=True))
    with pytest.raises(RateLimited, match="max_connections_per_peer"):
        lim.admit(conn(3, pid=10, matched=True))
    lim.admit(conn(4, pid=11, matched=True))  # another process is not affected


def test_a_reused_pid_is_another_peer() -> None:
    lim = limits(max_connections_per_peer=1)
    lim.admit(conn(1, pid=10, matched=True))
    again = FakeConn(2, PeerIdentity(uid=1000, gid=1000, pid=10, start_time=8), RULE)
    lim.admit(again)


def test_at_the_cap_the_longest_idle_unmatched_connection_goes_first() -> None:
    lim = limits(max_connections=3)
    busy = conn(1, pid=1, matched=False, idle=None)  # a request in flight: never evicted
    older = conn(2, pid=2, matched=False, idle=5.0)
    newer = conn(3, pid=3, matched=False, idle=9.0)
    for c in (busy, older, newer):
        lim.admit(c)
    lim.admit(conn(4, pid=4, matched=True))
    assert (busy.evicted, older.evicted, newer.evicted) == (False, True, False)
    assert len(lim) == 3 and lim.evicted == 1


def test_matched_callers_are_never_evicted() -> None:
    lim = limits(max_connections=2)
    lim.admit(conn(1, pid=1, matched=True, idle=1.0))
    lim.admit(conn(2, pid=2, matched=True, idle=1.0))
    with pytest.raises(RateLimited, match="2 connections open"):
        lim.admit(conn(3, pid=3, matched=True))


def test_the_uid_cap_evicts_that_uids_idle_unmatched_first() -> None:
    lim = limits(max_connections=10, max_connections_per_uid=2)
    other_uid = conn(1, pid=1, uid=2000, matched=False, idle=0.0)
    mine = conn(2, pid=2, matched=False, idle=3.0)
    lim.admit(other_uid)
    lim.admit(mine)
    lim.admit(conn(3, pid=3, matched=True))
    lim.admit(conn(4, pid=4, matched=True))  # uid 1000 is full: its unmatched one goes
    assert (other_uid.evicted, mine.evicted) == (False, True)
    with pytest.raises(RateLimited, match="max_connections_per_uid"):
        lim.admit(conn(5, pid=5, matched=True))


def test_release_frees_the_slot() -> None:
    lim = limits(max_connections=1)
    first = conn(1, pid=1, matched=True)
    lim.admit(first)
    lim.release(first)
    lim.release(first)  # idempotent
    lim.admit(conn(2, pid=2, matched=True))


def test_idle_callers_cannot_keep_the_operator_out() -> None:
    """Matched callers' idle connections fill every slot: an operator (aegisctl lock) still
    gets in by evicting the longest-idle one; another caller does not."""
    lim = limits(max_connections=3)
    busy = conn(1, pid=10, matched=True, idle=None)  # a request in flight: never evicted
    old, new = conn(2, pid=11, matched=True, idle=1.0), conn(3, pid=12, matched=True, idle=5.0)
    for c in (busy, old, new):
        lim.admit(c)
    with pytest.raises(RateLimited):
        lim.admit(conn(4, pid=13, matched=True))
    operator = CallerRule(name="operator", argv=["*/aegisctl *"], operator=True)
    lim.admit(FakeConn(5, PeerIdentity(uid=1000, gid=1000, pid=14, start_time=7), operator))
    assert old.evicted and not new.evicted and not busy.evicted

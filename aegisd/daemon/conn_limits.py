"""Connection admission: caps per process, per uid and in total, and who is evicted first.

Owns the decision, once a connection's peer is identified (before its ``Hello``), whether it
may stay (issue 13 finding 7: 256 idle connections of one process locked a real client out
for ten minutes). In order:

1. ``[daemon] max_connections_per_peer``: one process (``PeerIdentity.key``: uid, pid and
   start time) holds at most this many connections; one more is refused ``rate_limited``.
2. ``[daemon] max_connections_per_uid`` (default ``max_connections``): the same for one uid,
   so in separated mode one account cannot take every slot from the others. At this cap the
   longest-idle connection of that uid that matches no caller rule is evicted first.
3. ``[daemon] max_connections``: at the cap, the longest-idle connection that matches no
   caller rule is evicted (its peer gets ``rate_limited`` and the connection closes); only
   when there is none is the newcomer refused. Connections of matched callers are evicted
   only for an operator (``operator = true``: aegisctl, so that ``lock`` always gets in), and
   a connection with a request in flight never is.

A peer that matches no rule can only inspect (status, lock, its empty pending list), so
``connection.py`` also gives it the short ``unmatched_idle_timeout``. This module keeps no
sockets and does no I/O: it is handed connections that know their peer, whether they are idle
and how to be evicted, and it must not decide anything about requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aegisd.config import CallerRule, DaemonConfig
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import RateLimited

__all__ = ["Admittable", "ConnectionLimits"]

_RETRY_AFTER = 1.0


class Admittable(Protocol):
    """What admission needs to know about a connection (``connection.Connection``)."""

    conn_id: int
    peer: PeerIdentity | None
    rule: CallerRule | None

    @property
    def idle_since(self) -> float | None:
        """When it last had something to do, or None while a request is in flight."""
        ...

    def evict(self) -> None:
        """Close it (its peer is told ``rate_limited``); returns at once."""
        ...


class ConnectionLimits:
    """The admitted connections and the caps over them (one instance per ``Daemon``)."""

    def __init__(self, settings: Callable[[], DaemonConfig]) -> None:
        self._settings = settings  # read at each admission: a reload may change the caps
        self._admitted: dict[int, Admittable] = {}
        self.evicted = 0  # for tests and status-like figures

    def __len__(self) -> int:
        return len(self._admitted)

    def admit(self, conn: Admittable) -> None:
        """Admit ``conn`` (its peer is known) or raise ``RateLimited``; may evict another."""
        peer = conn.peer
        assert peer is not None, "admission comes after identification"
        cfg = self._settings()
        peers = [(c, c.peer) for c in self._admitted.values() if c.peer is not None]
        mine = [c for c, p in peers if p.key == peer.key]
        if len(mine) >= cfg.max_connections_per_peer:
            raise RateLimited(
                f"this process already has {len(mine)} connections open to aegisd "
                "([daemon] max_connections_per_peer)",
                retry_after=_RETRY_AFTER,
            )
        per_uid = cfg.max_connections_per_uid or cfg.max_connections
        same_uid = [c for c, p in peers if p.uid == peer.uid]
        operator = conn.rule is not None and conn.rule.operator
        if len(same_uid) >= per_uid and not self._evict_one(same_uid, operator):
            raise RateLimited(
                f"uid {peer.uid} already has {len(same_uid)} connections open to aegisd "
                "([daemon] max_connections_per_uid)",
                retry_after=_RETRY_AFTER,
            )
        if len(self._admitted) >= cfg.max_connections and not self._evict_one(
            list(self._admitted.values()), operator
        ):
            raise RateLimited(
                f"aegisd has {cfg.max_connections} connections open", retry_after=_RETRY_AFTER
            )
        self._admitted[conn.conn_id] = conn

    def release(self, conn: Admittable) -> None:
        """``conn`` ended (idempotent; also for one that was never admitted)."""
        if self._admitted.get(conn.conn_id) is conn:
            del self._admitted[conn.conn_id]

    def _evict_one(self, among: list[Admittable], for_operator: bool) -> bool:
        """Evict the longest-idle connection of ``among`` that matches no rule, if any. For an
        operator (``aegisctl lock`` is the person's emergency brake) an idle connection of a
        matched caller may go too, unmatched ones first: callers' idle connections must not
        keep the operator out."""
        candidates = [
            (c.rule is not None, since, c.conn_id, c)
            for c in among
            if (since := c.idle_since) is not None
            and (c.rule is None or (for_operator and not c.rule.operator))
        ]
        if not candidates:
            return False
        _, _, _, victim = min(candidates, key=lambda t: (t[0], t[1], t[2]))
        self.release(victim)  # its slot is free now, not when its task has wound down
        victim.evict()
        self.evicted += 1
        return True

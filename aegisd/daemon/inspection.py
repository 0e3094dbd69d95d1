"""Inspection requests: who may see and withdraw which pending approvals (issue 13 finding 5).

Owns the answers to ``ListPending``, ``CancelPending``, ``Lock``, ``ListActions`` and hands
``Reload``/``ShowPolicy`` to the policy keeper. ``Status`` stays with the daemon, which owns the
figures it reports.

Visibility, because every same-uid process can connect and the pending list carries what the
person is about to approve:

- an **operator** (``aegisd.daemon.mode.sees_everything``: a caller rule with
  ``operator = true``, as for ``aegisctl``; root; the daemon's own account in separated mode)
  lists and cancels every caller's pending approvals;
- a peer that **matches a caller rule** lists and cancels only the approvals its own process
  asked for (``PeerIdentity.key``: uid, pid and start time); cancelling anyone else's answers
  ``not_found``, exactly as for an id that does not exist, so ids cannot be probed;
- a peer that **matches no rule** gets an empty list (``scope = "none"`` with a note saying
  how to see everything) and ``peer_rejected`` when it tries to cancel;
- ``Lock`` stays open to every peer: it only makes things stricter.

This module must not decide requests (``broker.py``), touch sockets (``connection.py``) or
read the peer (``peer.py``); it only filters and audits.
"""

from __future__ import annotations

from typing import Final

import msgspec

from aegisd import wire
from aegisd.config import CallerRule
from aegisd.daemon.approvals import Recorder
from aegisd.daemon.broker import Broker
from aegisd.daemon.mode import sees_everything
from aegisd.daemon.peer import PeerIdentity, explain_no_match
from aegisd.daemon.policy_keeper import PolicyKeeper
from aegisd.errors import AegisError, NotFound, PeerRejected

__all__ = ["OPERATOR_HINT", "Inspection"]

OPERATOR_HINT: Final = (
    "a [[callers]] rule with operator = true matching aegisctl sees every caller's "
    "(docs/CONFIG.md, 'Who sees pending approvals')"
)


class Inspection:
    """Answers the inspection requests of one daemon (one instance per ``Daemon``)."""

    def __init__(self, *, record: Recorder, keeper: PolicyKeeper, mode: str) -> None:
        self._record = record
        self._keeper = keeper
        self._mode = mode

    async def answer(
        self,
        msg: wire.ClientMessage,
        peer: PeerIdentity,
        rule: CallerRule | None,
        broker: Broker,
    ) -> wire.DaemonMessage:
        """The answer to one inspection request; raises ``AegisError`` for an ``Error``."""
        match msg:
            case wire.Reload() | wire.ShowPolicy():
                return await self._keeper.answer(msg, peer)
            case wire.ListPending(id=req_id):
                return self._list(req_id, peer, rule, broker)
            case wire.CancelPending(id=req_id, pending_id=pending_id):
                return await self._cancel(req_id, pending_id, peer, rule, broker)
            case wire.Lock(id=req_id):
                cancelled, forgotten = broker.lock()
                await self._record("lock", pid=peer.pid, cancelled=cancelled, forgotten=forgotten)
                return wire.Locked(id=req_id, cancelled=cancelled, forgotten=forgotten)
            case wire.ListActions(id=req_id):
                return await self._actions(req_id, peer, rule)
        raise AegisError("unexpected message")  # pragma: no cover - the daemon routes these

    def _list(
        self, req_id: int, peer: PeerIdentity, rule: CallerRule | None, broker: Broker
    ) -> wire.PendingList:
        if sees_everything(peer, rule, self._mode):
            return wire.PendingList(id=req_id, pending=broker.pending(), scope="all")
        if rule is None:
            return wire.PendingList(
                id=req_id,
                pending=[],
                scope="none",
                note="no caller rule matches this process, so it sees no pending approvals; "
                + OPERATOR_HINT,
            )
        return wire.PendingList(
            id=req_id,
            pending=broker.pending(peer.key),
            scope="own",
            note=f"showing only the pending approvals of this process (caller {rule.name!r}); "
            + OPERATOR_HINT,
        )

    async def _cancel(
        self,
        req_id: int,
        pending_id: str,
        peer: PeerIdentity,
        rule: CallerRule | None,
        broker: Broker,
    ) -> wire.Locked:
        everything = sees_everything(peer, rule, self._mode)
        if not everything and rule is None:
            await self._record(
                "refused",
                pid=peer.pid,
                exe=peer.exe,
                code="peer_rejected",
                reason="cancel needs a caller rule",
                request="cancel_pending",
            )
            raise PeerRejected(
                "no caller rule matches this process, so it may not cancel pending approvals "
                "(`aegisctl lock` cancels all of them, and is open to everyone); " + OPERATOR_HINT
            )
        if not broker.cancel_pending(pending_id, None if everything else peer.key):
            mine = "" if everything else " of this process"
            raise NotFound(
                f"no pending approval {pending_id[:64]!r}{mine} (answered, expired or "
                "cancelled? `aegisctl pending` lists them)"
            )
        await self._record(
            "operator_cancel",
            pid=peer.pid,
            uid=peer.uid,
            caller=rule.name if rule else None,
            scope="all" if everything else "own",
            pending_id=pending_id,
        )
        return wire.Locked(id=req_id, cancelled=1, forgotten=0)

    async def _actions(
        self, req_id: int, peer: PeerIdentity, rule: CallerRule | None
    ) -> wire.Actions:
        policy = self._keeper.policy
        if rule is None:
            await self._record(
                "refused",
                pid=peer.pid,
                exe=peer.exe,
                code="peer_rejected",
                reason="no caller rule matches",
                request="list_actions",
            )
            raise PeerRejected(explain_no_match(peer, policy.callers))
        return wire.Actions(
            id=req_id,
            actions=[
                wire.ActionInfo(
                    name=a.name,
                    description=a.spec.description,
                    approval=a.spec.approval,
                    delivery=a.spec.delivery,
                    params_schema=a.params_schema(),
                    body=bool(a.spec.request and a.spec.request.body),
                    method=a.spec.request.method if a.spec.request else "",
                    title=a.spec.title,
                    annotations={
                        k: v
                        for k, v in msgspec.structs.asdict(a.spec.annotations).items()
                        if v is not None
                    },
                )
                for a in policy.actions_for(rule)
            ],
        )

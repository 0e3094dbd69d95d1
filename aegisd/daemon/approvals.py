"""Pending approvals: one push per request and owner, its waiters, its poller and its hold.

Owns the life of every CIBA push (DESIGN §3 steps 3-5): the local limits checked before a push
is sent (pending caps, the person's CIBA starts a minute and each caller's share of them),
sharing one push between identical requests of the *same owner*, polling in the broker's
nursery, single use of an approval, and keeping an approval for a requester that stopped
waiting (``max_wait``) and will come back with its claim. It must not deliver credentials (the
broker does), speak HTTP (the ``Approver`` does) or touch sockets (it is handed ``send``).

Ownership: an approval belongs to the request that started it. Its owner is the request's
claim (an unguessable handle the requester keeps in memory; only its SHA-256 is kept here)
when there is one, else the peer process (uid and pid). Identical requests (same digest) of the
same owner share one push; anyone else gets a push of their own, so a second process with the
same caller rule can never take the credential the person approved for the first.

Single use: when a push is answered, one waiter takes the approval; the other waiters of that
owner start a fresh push. A requester whose ``max_wait`` passed leaves the push out (audited
``detached``); if the person answers while nobody waits, the outcome is held until the push
would have expired (at least ``HOLD_GRACE`` seconds) for the owner to collect, and an approval
nobody collects is audited ``approved_not_collected``: its credential is never fetched.
``lock`` bumps an epoch, so an approval answered before a lock can no longer be used after it.

Each approval remembers the processes that asked for it (``requesters``), so listing and
cancelling can be limited to them; who may see everything is ``aegisd.daemon.inspection``'s call.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from aegisd.auth0.rar import guardian_details
from aegisd.auth0.tokens import Approval, CibaStart, Credential
from aegisd.config import CredentialSpec
from aegisd.daemon.limits import PendingCaps, SlidingWindow
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import (
    AegisError,
    ApprovalPending,
    ApprovalUnavailable,
    Cancelled,
    Internal,
    RateLimited,
    ShuttingDown,
)
from aegisd.policy import CompiledAction, Policy
from aegisd.wire import DaemonMessage, Pending, PendingInfo

__all__ = ["HOLD_GRACE", "ApprovalRequest", "Approvals", "Approver", "PeerKey", "Recorder"]

PeerKey = tuple[int, int, int]  # PeerIdentity.key: (uid, pid, start time)

log = logging.getLogger(__name__)

# An answered push is held at least this long for a requester that stopped waiting, so one
# that comes back right after a denial or an expiry learns the outcome instead of pushing again.
HOLD_GRACE: Final = 30.0
_RETRY_AFTER_PENDING: Final = 1.0


class Approver(Protocol):
    """What approvals need from the Auth0 client (``aegisd.auth0.client.Auth0Client``)."""

    async def start_approval(
        self,
        *,
        binding_message: str,
        authorization_details: list[dict[str, object]] | None = None,
        offline_access: bool = False,
        scopes: Sequence[str] = (),
    ) -> CibaStart: ...

    async def wait_approval(self, start: CibaStart) -> Approval: ...

    async def obtain_credential(self, spec: CredentialSpec, approval: Approval) -> Credential: ...


class Recorder(Protocol):
    """Durable audit: returns only once the record is on disk."""

    async def __call__(self, event: str, **fields: object) -> None: ...


@dataclass(frozen=True)
class ApprovalRequest:
    """One request that needs the person's approval, as the broker has checked it."""

    req_id: int
    caller: str
    action: CompiledAction
    params: dict[str, str]
    digest: str
    owner: str
    policy: Policy
    base: dict[str, object]
    send: Callable[[DaemonMessage], Awaitable[None]]
    max_wait: float | None = None
    peer: PeerIdentity | None = None  # who asks: named on the phone with RAR (rar.py)


@dataclass(eq=False)
class _PendingApproval:
    pending_id: str
    digest: str
    owner: str
    action: str
    caller: str
    binding_message: str
    params: dict[str, str]
    started_at: float
    expires_at: float
    policy: Policy
    epoch: int
    # every process that asked for this approval (its launcher and those that rejoined it)
    requesters: set[PeerKey] = field(default_factory=set)
    waiters: int = 0
    claimed: bool = False
    kept: bool = False  # the last waiter left by max_wait: keep the push out for it
    forgotten: bool = False
    outcome: Approval | AegisError | None = None
    cancel_reason: AegisError | None = None
    launch_cancelled: bool = False
    started: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    collected: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    hold_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def key(self) -> tuple[str, str]:
        return (self.digest, self.owner)

    @property
    def state(self) -> str:
        """``pending`` while the push is out, then what the person answered (held for its
        requester): ``approved`` or the outcome's code."""
        if not self.done.is_set() or self.outcome is None:
            return "pending"
        return "approved" if isinstance(self.outcome, Approval) else self.outcome.code

    def info(self) -> PendingInfo:
        return PendingInfo(
            pending_id=self.pending_id,
            action=self.action,
            caller=self.caller,
            binding_message=self.binding_message,
            digest=self.digest,
            started_at=self.started_at,
            expires_at=self.expires_at,
            waiters=self.waiters,
            params=dict(self.params),
            state=self.state,
        )


def _copy(exc: AegisError) -> AegisError:
    """A fresh exception per waiter (one instance must not be raised in several tasks)."""
    return type(exc)(exc.message, retry_after=exc.retry_after)


class Approvals:
    """The pushes that are out. Run ``serve`` in the daemon's nursery before ``approve``."""

    def __init__(
        self,
        *,
        approver: Approver | None,
        record: Recorder,
        now: Callable[[], float],
        max_pending: int = 1024,
        max_pending_per_caller: int = 32,
        ciba_starts_per_minute: int = 5,
        ciba_starts_per_minute_per_caller: int | None = None,
        authorization_details: bool = False,
        offline_access: bool = False,
    ) -> None:
        self._approver = approver
        self._record = record
        self._now = now
        self._caps = PendingCaps(max_pending, max_pending_per_caller)
        self._window = SlidingWindow(ciba_starts_per_minute, 60.0)
        # one caller must not use up the person's whole budget (Auth0 caps pushes per user)
        self._per_caller_limit = ciba_starts_per_minute_per_caller or max(
            1, math.ceil(ciba_starts_per_minute * 0.6)
        )
        self._caller_windows: dict[str, SlidingWindow] = {}
        self._rar = authorization_details
        self._offline = offline_access
        self._by_key: dict[tuple[str, str], _PendingApproval] = {}
        self._by_id: dict[str, _PendingApproval] = {}
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self.epoch = 0  # bumped by lock(): approvals from before a lock are void after it

    @property
    def approver(self) -> Approver | None:
        """Who starts and polls the pushes (None: the config has no Auth0; approvals refuse)."""
        return self._approver

    # ---- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pollers' nursery until cancelled; pending approvals end ``shutting_down``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def shutdown(self) -> None:
        """End every pending approval with ``shutting_down`` and drop every held one."""
        self._stopping = True
        for pa in list(self._by_id.values()):
            pa.cancel_reason = ShuttingDown()
            pa.scope.cancel()
            pa.hold_scope.cancel()

    def lock(self) -> int:
        """Cancel every pending approval and void every answered one not yet used."""
        self.epoch += 1
        for pa in list(self._by_id.values()):
            self._cancel(pa, Cancelled("cancelled by aegisctl lock"))
        return len(self._by_id)

    def cancel_pending(self, pending_id: str, requester: PeerKey | None = None) -> bool:
        """Cancel one approval; with ``requester``, only one that process asked for."""
        pa = self._by_id.get(pending_id)
        if pa is None or (requester is not None and requester not in pa.requesters):
            return False
        reason = "the operator" if requester is None else "its requester"
        self._cancel(pa, Cancelled(f"cancelled by {reason}"))
        return True

    @staticmethod
    def _cancel(pa: _PendingApproval, reason: AegisError) -> None:
        if pa.done.is_set():  # held: its requester learns of the cancellation when it returns
            pa.outcome = reason
        else:
            pa.cancel_reason = reason
            pa.scope.cancel()

    def pending(self, requester: PeerKey | None = None) -> list[PendingInfo]:
        """Approvals whose push is out (or held); with ``requester``, only that process's."""
        out = [pa for pa in self._by_id.values() if pa.started.is_set()]
        return [pa.info() for pa in out if requester is None or requester in pa.requesters]

    @property
    def count(self) -> int:
        return len(self._by_id)

    # ---- one request ---------------------------------------------------------------------

    async def approve(self, req: ApprovalRequest) -> Approval:
        """Wait for the person's answer to ``req`` and take the approval (single use).

        Raises the outcome's ``AegisError`` (``ApprovalDenied``…), ``ApprovalPending`` when
        ``req.max_wait`` passed first (the push stays out for the owner), or ``Cancelled``.
        """
        key = (req.digest, req.owner)
        while True:
            pa = self._by_key.get(key)
            if pa is not None and pa.done.is_set():
                # answered while its requester was away: it is back, with its claim
                await self._record("reattached", **req.base, pending_id=pa.pending_id)
                if not pa.claimed:
                    pa.collected.set()
                    self._forget(pa)
                    return self._take(pa)
                self._forget(pa)
                continue
            launcher = pa is None
            if pa is None:
                pa = self._reserve(req)
            if req.peer is not None:
                pa.requesters.add(req.peer.key)
            # counted before any await, so the launcher leaving cannot withdraw our push
            pa.waiters += 1
            detached = False
            try:
                if launcher:
                    await self._launch(pa, req)
                else:
                    event = "reattached" if pa.kept else "coalesced"
                    await self._record(event, **req.base, pending_id=pa.pending_id)
                    await pa.started.wait()
                if not pa.done.is_set():
                    await req.send(
                        Pending(
                            id=req.req_id,
                            binding_message=pa.binding_message,
                            expires_at=pa.expires_at,
                            digest=req.digest,
                        )
                    )
                    with trio.move_on_after(math.inf if req.max_wait is None else req.max_wait):
                        await pa.done.wait()
                    detached = not pa.done.is_set()
            finally:
                pa.waiters -= 1
                if not pa.done.is_set():
                    if detached:
                        pa.kept = True
                    elif pa.waiters == 0:
                        pa.kept = False
                        pa.cancel_reason = Cancelled("withdrawn by the caller")
                        pa.scope.cancel()
            if detached:
                left = max(0.0, pa.expires_at - self._now())
                raise ApprovalPending(
                    f"waiting for the person's approval on their phone: {pa.binding_message}; "
                    f"the request stays valid for {left:.0f} s: send it again, unchanged and "
                    "with the same claim, to continue",
                    retry_after=_RETRY_AFTER_PENDING,
                    expires_at=pa.expires_at,
                )
            if pa.launch_cancelled and not launcher:
                continue  # the request that started the push went away first: start our own
            if pa.claimed:
                continue  # another waiter took this approval: single use means a fresh push
            return self._take(pa)

    def _take(self, pa: _PendingApproval) -> Approval:
        """Claim the answered push for one waiter, synchronously (no await: nothing can slip
        between the claim and the checks)."""
        outcome = pa.outcome
        if isinstance(outcome, AegisError):
            raise _copy(outcome)
        if outcome is None:  # pragma: no cover - the poller always sets an outcome
            raise Internal()
        pa.claimed = True
        if pa.epoch != self.epoch:
            raise Cancelled("cancelled by aegisctl lock")
        return outcome

    def _reserve(self, req: ApprovalRequest) -> _PendingApproval:
        """Check the local limits and register the approval *before* any await, so identical
        requests of the same owner arriving while the push is sent join it."""
        if self._approver is None or self._nursery is None:
            raise ApprovalUnavailable("no [auth0] section is configured, so nobody can approve")
        now = trio.current_time()
        mine = self._caller_windows.setdefault(
            req.caller, SlidingWindow(self._per_caller_limit, 60.0)
        )
        if self._window.retry_after(now) > 0:
            self._window.take(now)  # raises RateLimited naming the person's limit
        if (wait := mine.retry_after(now)) > 0:
            raise RateLimited(
                f"caller {req.caller!r} may start at most {self._per_caller_limit} approvals "
                f"a minute; retry in {wait:.0f} s",
                retry_after=round(wait, 3),
            )
        self._caps.acquire(req.caller)  # raises RateLimited when too many are pending
        self._window.take(now)
        mine.take(now)
        pa = _PendingApproval(
            pending_id=secrets.token_hex(4),
            digest=req.digest,
            owner=req.owner,
            action=req.action.name,
            caller=req.caller,
            binding_message=req.action.binding_message(req.params, req.digest),
            params=req.params,
            started_at=self._now(),
            expires_at=0.0,
            policy=req.policy,
            epoch=self.epoch,
        )
        self._by_key[pa.key] = pa
        self._by_id[pa.pending_id] = pa  # lock/cancel can reach it while the push is sent
        return pa

    def _forget(self, pa: _PendingApproval) -> None:
        """Drop ``pa`` from the tables and release its cap, once (idempotent)."""
        if pa.forgotten:
            return
        pa.forgotten = True
        if self._by_key.get(pa.key) is pa:
            del self._by_key[pa.key]
        if self._by_id.get(pa.pending_id) is pa:
            del self._by_id[pa.pending_id]
        self._caps.release(pa.caller)

    async def _launch(self, pa: _PendingApproval, req: ApprovalRequest) -> None:
        """Send the push; on success hand the approval to a poller in the nursery."""
        assert self._approver is not None and self._nursery is not None
        details: list[dict[str, object]] | None = None
        if self._rar:
            details = guardian_details(
                action=req.action.name,
                binding_message=pa.binding_message,
                caller=req.caller,
                exe=req.peer.exe if req.peer is not None else "",
                pid=req.peer.pid if req.peer is not None else 0,
                params=req.params,
            )
        credential = req.action.spec.credential
        try:
            start = await self._approver.start_approval(
                binding_message=pa.binding_message,
                authorization_details=details,
                # a refresh token lets Token Vault use its documented refresh-token exchange
                offline_access=self._offline and credential.kind == "token_vault",
                # API permissions the handed-out CIBA token must carry (Guardian shows them)
                scopes=credential.scopes if credential.kind == "ciba_token" else (),
            )
        except BaseException as exc:
            self._forget(pa)
            if isinstance(exc, AegisError):
                pa.outcome = exc
            else:
                pa.launch_cancelled = True
                pa.outcome = Cancelled("withdrawn before the push was sent")
            pa.done.set()
            pa.started.set()
            raise
        pa.expires_at = start.expires_at
        # The push is out: from here on, a poller must own it even if this caller leaves.
        try:
            with trio.CancelScope(shield=True):
                await self._record(
                    "pending",
                    **req.base,
                    pending_id=pa.pending_id,
                    auth_req=start.request_fingerprint,  # the same name the daemon's log uses
                    binding_message=pa.binding_message,
                    expires_at=start.expires_at,
                )
        except AegisError as exc:
            # the audit log failed: release nothing, and let identical requests fail too
            self._forget(pa)
            pa.outcome = exc
            pa.done.set()
            pa.started.set()
            raise
        self._nursery.start_soon(self._poll, pa, start, req.base)
        pa.started.set()

    async def _poll(self, pa: _PendingApproval, start: CibaStart, base: dict[str, object]) -> None:
        assert self._approver is not None
        t0 = trio.current_time()
        event, extra = "withdrawn", dict[str, object]()
        hold = False
        try:
            with pa.scope:
                try:
                    approval = await self._approver.wait_approval(start)
                except AegisError as exc:
                    pa.outcome = exc
                    event = {
                        "approval_denied": "denied",
                        "approval_expired": "expired",
                    }.get(exc.code, "approval_failed")
                    extra = {"code": exc.code, "reason": exc.message}
                except Exception:
                    log.exception("approval %s failed", pa.pending_id)
                    pa.outcome = Internal()
                    event, extra = "approval_failed", {"code": "internal"}
                else:
                    pa.outcome = approval
                    event = "approved"
                    extra = {"sub": approval.sub, "latency": round(trio.current_time() - t0, 3)}
            if pa.outcome is None:
                pa.outcome = pa.cancel_reason or Cancelled("withdrawn")
                extra = {"code": pa.outcome.code, "reason": pa.outcome.message}
        finally:
            if pa.outcome is None:
                pa.outcome = pa.cancel_reason or ShuttingDown()
            # answered while nobody waits, but its requester said it would come back
            hold = pa.waiters == 0 and pa.kept and not self._stopping
            if not hold:
                self._forget(pa)  # identical requests from now on start a push of their own
            with trio.CancelScope(shield=True):
                await self._record(
                    event, **base, pending_id=pa.pending_id, held=hold or None, **extra
                )
            pa.done.set()
        if hold:
            await self._hold(pa, base)

    async def _hold(self, pa: _PendingApproval, base: dict[str, object]) -> None:
        """Keep an answered push for its owner until collected or past its expiry."""
        left = max(pa.expires_at - self._now(), HOLD_GRACE)
        try:
            pa.hold_scope.deadline = trio.current_time() + left
            with pa.hold_scope:
                await pa.collected.wait()
        finally:
            self._forget(pa)
            if not pa.collected.is_set() and isinstance(pa.outcome, Approval):
                with trio.CancelScope(shield=True):
                    await self._record(
                        "approved_not_collected",
                        **base,
                        pending_id=pa.pending_id,
                        reason="shutting_down" if self._stopping else "expired",
                    )

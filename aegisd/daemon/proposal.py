"""``aegisctl policy propose``: a new policy, applied only after the approver says yes.

Owns one proposal's journey: parse and compile the text against root's config (same checks
as a reload; a proposal carries only ``[[callers]]`` and ``[actions]``), summarise the
difference (``policy_diff``), ask the approver by CIBA with a binding message such as
``Policy: 2 added, 1 weaker #ab12cd`` (the digest is the new policy's SHA-256, the hash
``policy show`` prints once it is active) and the full list of changes in the RAR details,
send ``Pending`` while the push is out, and hand the approved config to the daemon's
``apply`` callable, which writes the policy file atomically and swaps the policy. Every step
is audited with the text's and the policy's SHA-256 (``policy_proposed``, then
``policy_applied`` or ``policy_rejected``). A denial, an expiry or a cancellation leaves the
policy as it was. At most one proposal waits at a time, and at most six pushes go out per
hour (a turned agent may propose too; it must not wear the approver down with pushes).

It uses the ``Approver`` protocol of ``aegisd.daemon.approvals`` directly (``start_approval``/
``wait_approval``); it must not touch sockets, files or the broker's pending table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from aegisd.binding import render_binding_message
from aegisd.config import Config
from aegisd.daemon.approvals import Approver, Recorder
from aegisd.daemon.limits import SlidingWindow
from aegisd.daemon.peer import PeerIdentity
from aegisd.errors import (
    AegisError,
    ApprovalUnavailable,
    ConfigError,
    Internal,
    PolicyDenied,
    RateLimited,
)
from aegisd.policy import compile_policy
from aegisd.policy_diff import diff_policies
from aegisd.policy_text import parse_policy, policy_sha256
from aegisd.wire import Pending, PolicyResult

__all__ = ["Applied", "ProposalDesk"]

log = logging.getLogger(__name__)

_MAX_CHANGES_SHOWN: Final = 50
_PROPOSALS_PER_HOUR: Final = 6
_RAR_TYPE: Final = "urn:auth0:schemas:authorization-details:v1:aegis-policy"


@dataclass(frozen=True)
class Applied:
    generation: int
    sha256: str


# apply(new_config, expected_active_sha256) -> Applied; raises AegisError if it cannot
Apply = Callable[[Config, str], Awaitable[Applied]]


class ProposalDesk:
    """Runs proposals one at a time. ``approver`` None: nobody can approve (no [auth0])."""

    def __init__(
        self, approver: Approver | None, record: Recorder, *, authorization_details: bool = False
    ) -> None:
        self._approver = approver
        self._record = record
        self._rar = authorization_details
        self._busy = False
        # a turned agent may propose too: it must not be able to flood the phone with pushes
        self._window = SlidingWindow(_PROPOSALS_PER_HOUR, 3600.0)

    async def propose(
        self,
        req_id: int,
        text: str,
        *,
        current: Config,
        peer: PeerIdentity,
        send: Callable[[Pending], Awaitable[None]],
        apply: Apply,
    ) -> PolicyResult:
        """Validate, ask, apply. Raises ``AegisError`` (denied, expired…) after auditing it."""
        text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        base: dict[str, object] = {"pid": peer.pid, "uid": peer.uid, "text_sha256": text_sha}
        if not current.daemon.policy_file:
            raise PolicyDenied(
                "this daemon has no [daemon] policy_file, so a proposal has nowhere to live; "
                "edit the config and run `aegisctl reload` instead"
            )
        try:
            new = parse_policy(text, current)
            compile_policy(new)
        except ConfigError as exc:
            await self._record(
                "policy_rejected", **base, reason="invalid", problems=exc.problems[:20]
            )
            return PolicyResult(id=req_id, applied=False, problems=exc.problems)
        old_sha = policy_sha256(current.callers, current.actions)
        new_sha = policy_sha256(new.callers, new.actions)
        diff = diff_policies(current.callers, current.actions, new.callers, new.actions)
        changes = [str(c) for c in diff.changes]
        summary = diff.summary()
        if diff.empty or new_sha == old_sha:
            return PolicyResult(id=req_id, applied=False, sha256=old_sha, summary="no change")
        if self._approver is None:
            raise ApprovalUnavailable("no [auth0] section is configured, so nobody can approve")
        if self._busy:
            raise RateLimited("another policy proposal is waiting for approval", retry_after=5.0)
        self._window.take(trio.current_time())
        self._busy = True
        try:
            return await self._ask_and_apply(
                req_id, new, summary, changes, old_sha, new_sha, base, send, apply
            )
        finally:
            self._busy = False

    async def _ask_and_apply(
        self,
        req_id: int,
        new: Config,
        summary: str,
        changes: list[str],
        old_sha: str,
        new_sha: str,
        base: dict[str, object],
        send: Callable[[Pending], Awaitable[None]],
        apply: Apply,
    ) -> PolicyResult:
        assert self._approver is not None
        base = {**base, "policy_sha256": new_sha, "previous_sha256": old_sha}
        binding = render_binding_message(f"Policy: {summary}", {}, new_sha)
        await self._record(
            "policy_proposed", **base, summary=summary, changes=changes[:_MAX_CHANGES_SHOWN]
        )
        details: list[dict[str, object]] | None = None
        if self._rar:
            details = [
                {
                    "type": _RAR_TYPE,
                    "instruction": binding,
                    "summary": summary,
                    "changes": changes[:_MAX_CHANGES_SHOWN],
                    "policy_sha256": new_sha,
                }
            ]
        try:
            start = await self._approver.start_approval(
                binding_message=binding, authorization_details=details
            )
            await self._record(
                "policy_pending",
                **base,
                auth_req=start.request_fingerprint,
                expires_at=start.expires_at,
            )
            await send(
                Pending(
                    id=req_id, binding_message=binding, expires_at=start.expires_at, digest=new_sha
                )
            )
            approval = await self._approver.wait_approval(start)
            applied = await apply(new, old_sha)
        except AegisError as exc:
            with trio.CancelScope(shield=True):
                await self._record("policy_rejected", **base, code=exc.code, reason=exc.message)
            raise
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._record("policy_rejected", **base, code="cancelled", reason="withdrawn")
            raise
        except Exception:
            log.exception("policy proposal failed")
            with trio.CancelScope(shield=True):
                await self._record("policy_rejected", **base, code="internal", reason="internal")
            raise Internal() from None
        await self._record(
            "policy_applied", **base, sub=approval.sub, generation=applied.generation
        )
        return PolicyResult(
            id=req_id,
            applied=True,
            sha256=applied.sha256,
            summary=summary,
            changes=changes,
            generation=applied.generation,
        )

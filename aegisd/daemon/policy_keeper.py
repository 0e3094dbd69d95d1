"""The daemon's active policy: loading it, reloading it, showing it, replacing it by proposal.

Owns the effective config (root's config with the active ``[[callers]]``/``[actions]``), its
compiled ``Policy``, the policy's SHA-256 and source, and a generation counter bumped by
every change: SIGHUP and ``aegisctl reload`` (``reload``; ``answer`` checks the operator),
``aegisctl policy show`` (``show``) and an approved proposal (``apply``, called by
``proposal.py``). Where the policy is read from is ``policy_store``'s rule. The swap is
atomic: one assignment, and requests keep the ``Policy`` they started with; ``on_swap`` lets
the daemon forget remembered approvals of changed actions and re-match connected peers. It
must not touch sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
import trio

from aegisd.config import Config, load_config
from aegisd.daemon.approvals import Recorder
from aegisd.daemon.mode import operator_refusal
from aegisd.daemon.peer import PeerIdentity
from aegisd.daemon.policy_store import Active, load_active, write_policy_file
from aegisd.daemon.proposal import Applied
from aegisd.errors import ConfigError, Internal, PeerRejected, PolicyDenied
from aegisd.policy import Policy, compile_policy
from aegisd.policy_text import policy_sha256, render_policy
from aegisd.wire import PolicyText, Reload, Reloaded, ShowPolicy

__all__ = ["PolicyKeeper"]

log = logging.getLogger(__name__)

# on_swap(new_policy, changed_action_names) -> approvals forgotten
OnSwap = Callable[[Policy, list[str]], int]


class PolicyKeeper:
    def __init__(self, config: Config, record: Recorder, on_swap: OnSwap) -> None:
        self._record = record
        self._on_swap = on_swap
        policy = compile_policy(config)
        sha = policy_sha256(config.callers, config.actions)
        self.active = Active(config, policy, "config", sha, sha)
        self.generation = 0

    @property
    def config(self) -> Config:
        return self.active.config

    @property
    def policy(self) -> Policy:
        return self.active.policy

    async def adopt(self) -> None:
        """At start (the audit is open): switch to the policy file if it is the active one."""
        active = await trio.to_thread.run_sync(load_active, self.active.config)
        await self._note_rewrite(active)
        if active.source != "config" or active.sha256 != self.active.sha256:
            self._swap(active)
            log.info("active policy from %s (sha256 %s)", active.source, active.sha256[:12])

    async def _note_rewrite(self, active: Active) -> None:
        if active.rewritten is not None:
            log.warning("policy file rewritten from the config: %s", active.rewritten)
            await self._record(
                "policy_from_config",
                policy_file=active.source,
                reason=active.rewritten,
                policy_sha256=active.sha256,
            )

    def _swap(self, active: Active) -> tuple[list[str], int]:
        old = self.active.policy
        changed = [
            name
            for name, action in old.actions.items()
            if name not in active.policy.actions or active.policy.actions[name].spec != action.spec
        ]
        self.active = active  # pending approvals keep the Policy they started with
        self.generation += 1
        return changed, self._on_swap(active.policy, changed)

    async def reload(self, **requested_by: object) -> list[str]:
        """Re-read the config (and the policy file); the problems, empty when it worked.

        ``requested_by`` (pid, uid of an ``aegisctl reload``) goes into the audit records.
        """
        source = self.active.config.source or None
        try:
            new_cfg = await trio.to_thread.run_sync(load_config, source)
            active = await trio.to_thread.run_sync(load_active, new_cfg)
        except ConfigError as exc:
            log.error("reload failed, keeping the current policy: %s", "; ".join(exc.problems))
            await self._record("reload_failed", problems=exc.problems[:20], **requested_by)
            return exc.problems or ["invalid configuration"]
        await self._note_rewrite(active)
        changed, forgotten = self._swap(active)
        await self._record(
            "reloaded",
            actions=len(active.policy.actions),
            changed=changed,
            forgotten=forgotten,
            policy_sha256=active.sha256,
            policy_source=active.source,
            generation=self.generation,
            **requested_by,
        )
        for warning in active.policy.warnings:
            log.warning("policy: %s", warning)
        log.info("policy reloaded: %d actions", len(active.policy.actions))
        return []

    async def apply(self, new: Config, expected_sha256: str) -> Applied:
        """Make an approved proposal the active policy (``proposal.Apply``)."""
        current = self.active
        if current.sha256 != expected_sha256:
            raise PolicyDenied("the active policy changed while the proposal waited; propose again")
        path_text = current.config.daemon.policy_file
        if not path_text:  # pragma: no cover - proposal.py checks first
            raise PolicyDenied("no [daemon] policy_file is configured")
        new = msgspec.structs.replace(new, source=current.config.source)
        policy = compile_policy(new)
        path = path_text
        try:
            sha = await trio.to_thread.run_sync(write_policy_file, path, new, current.base_sha256)
        except OSError as exc:
            log.error("cannot write the policy file %s: %s", path, exc.strerror)
            raise Internal(
                "the policy file could not be written; the policy is unchanged"
            ) from None
        self._swap(Active(new, policy, path, sha, current.base_sha256))
        log.info("proposed policy applied (sha256 %s)", sha[:12])
        return Applied(self.generation, sha)

    async def answer(self, msg: Reload | ShowPolicy, peer: PeerIdentity) -> Reloaded | PolicyText:
        """Answer ``Reload`` (for the operator only) or ``ShowPolicy``."""
        if isinstance(msg, ShowPolicy):
            return self.show(msg.id)
        refusal = operator_refusal(peer)
        if refusal is not None:
            raise PeerRejected(refusal)
        problems = await self.reload(pid=peer.pid, uid=peer.uid)
        return Reloaded(
            id=msg.id,
            ok=not problems,
            generation=self.generation,
            problems=problems[:50],
            policy_sha256=self.active.sha256,
        )

    def show(self, req_id: int) -> PolicyText:
        a = self.active
        text = (
            f"# aegisd active policy, sha256 {a.sha256}\n"
            f"# from {a.source}; change it with `aegisctl policy propose FILE`\n\n"
            + render_policy(a.config.callers, a.config.actions)
        )
        return PolicyText(id=req_id, text=text, sha256=a.sha256, source=a.source)

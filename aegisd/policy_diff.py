"""What a policy change does, in words the approver can judge on a phone.

Owns ``diff_policies``: compares two policies (caller rules and actions) and lists every
change as added, removed, weaker or changed, and ``PolicyDiff.summary`` ("2 added, 1 weaker"),
which becomes the proposal's binding message. "Weaker" means the new policy may allow
something the old one did not: an approval lowered (deny -> ciba -> none), a parameter
pattern changed or dropped (regular expressions cannot be compared, so any change counts), a
credential, proxied request or binding message changed, delivery proxy -> token, ``remember``
added or extended, a caller rule added, or one that allows more actions or checks less.
When in doubt a change counts as weaker: the summary must never understate. Pure code.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aegisd.config import ActionSpec, CallerRule

__all__ = ["Change", "PolicyDiff", "diff_policies"]

Kind = Literal["added", "removed", "weaker", "changed"]
_APPROVAL_RANK: Final = {"none": 0, "ciba": 1, "deny": 2}


@dataclass(frozen=True)
class Change:
    kind: Kind
    subject: str  # "action demo.delete" or "caller claude"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass(frozen=True)
class PolicyDiff:
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def count(self, kind: Kind) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def summary(self) -> str:
        """``"2 added, 1 removed, 1 weaker"`` (zero counts left out); ``"no change"``."""
        parts = [
            f"{n} {kind}" for kind in ("added", "removed", "weaker") if (n := self.count(kind))
        ]
        if not parts and (n := self.count("changed")):
            parts.append(f"{n} changed")
        return ", ".join(parts) or "no change"


def _action_changes(name: str, old: ActionSpec, new: ActionSpec) -> list[Change]:
    subject = f"action {name}"
    out: list[Change] = []

    def weaker(detail: str) -> None:
        out.append(Change("weaker", subject, detail))

    if _APPROVAL_RANK[new.approval] < _APPROVAL_RANK[old.approval]:
        weaker(f"approval {old.approval} -> {new.approval}")
    elif new.approval != old.approval:
        out.append(Change("changed", subject, f"approval {old.approval} -> {new.approval}"))
    for param, pattern in old.params.items():
        if param not in new.params:
            weaker(f"parameter {param} no longer checked")
        elif new.params[param] != pattern:
            weaker(f"parameter {param} pattern {pattern!r} -> {new.params[param]!r}")
    added = sorted(set(new.params) - set(old.params))
    if added:
        out.append(Change("changed", subject, f"new parameter(s) {', '.join(added)}"))
    if old.delivery == "proxy" and new.delivery == "token":
        weaker("delivery proxy -> token (the credential leaves aegisd)")
    elif new.delivery != old.delivery:
        out.append(Change("changed", subject, f"delivery {old.delivery} -> {new.delivery}"))
    if new.credential != old.credential:
        weaker("credential changed")
    if new.request != old.request:
        weaker("proxied request changed")
    if new.binding_message != old.binding_message:
        weaker(f"binding message {old.binding_message!r} -> {new.binding_message!r}")
    if new.scope != old.scope:
        weaker(f"scope {old.scope!r} -> {new.scope!r}")
    if new.remember != old.remember:
        if new.remember is None:
            out.append(Change("changed", subject, "remember removed"))
        elif old.remember is None:
            weaker(f"remember added ({new.remember.scope}, {new.remember.ttl:g} s)")
        elif new.remember.ttl > old.remember.ttl or (
            old.remember.scope == "request" and new.remember.scope == "action"
        ):
            weaker(
                f"remember {old.remember.scope} {old.remember.ttl:g} s -> "
                f"{new.remember.scope} {new.remember.ttl:g} s"
            )
        else:
            out.append(Change("changed", subject, "remember shortened"))
    if new.description != old.description and not out:
        out.append(Change("changed", subject, "description"))
    return out


def _allowed(rule: CallerRule, names: Sequence[str]) -> set[str]:
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in rule.actions)}


def _caller_changes(old: CallerRule, new: CallerRule, names: Sequence[str]) -> list[Change]:
    subject = f"caller {new.name}"
    out: list[Change] = []
    more = sorted(_allowed(new, names) - _allowed(old, names))
    if more:
        out.append(Change("weaker", subject, f"may now use {', '.join(more)}"))
    elif new.actions != old.actions:
        out.append(Change("changed", subject, "action patterns"))
    if new.operator != old.operator:
        # an operator sees and cancels every caller's pending approvals (inspection.py)
        kind: Kind = "weaker" if new.operator else "changed"
        out.append(Change(kind, subject, f"operator {old.operator} -> {new.operator}"))
    for key in ("exe", "sha256", "argv", "uids"):
        before, after = getattr(old, key), getattr(new, key)
        if before == after:
            continue
        # an empty list checks nothing; a longer one accepts more alternatives
        if before and (not after or not set(after) <= set(before)):
            out.append(Change("weaker", subject, f"{key} {before} -> {after}"))
        else:
            out.append(Change("changed", subject, f"{key} narrowed"))
    return out


def diff_policies(
    old_callers: Sequence[CallerRule],
    old_actions: Mapping[str, ActionSpec],
    new_callers: Sequence[CallerRule],
    new_actions: Mapping[str, ActionSpec],
) -> PolicyDiff:
    """Every change from the old policy to the new one (see the module docstring)."""
    changes: list[Change] = []
    for name in sorted(set(new_actions) - set(old_actions)):
        spec = new_actions[name]
        changes.append(Change("added", f"action {name}", f"approval {spec.approval}"))
    for name in sorted(set(old_actions) - set(new_actions)):
        changes.append(Change("removed", f"action {name}", "no longer defined"))
    for name in sorted(set(old_actions) & set(new_actions)):
        changes += _action_changes(name, old_actions[name], new_actions[name])
    names = sorted(set(old_actions) | set(new_actions))
    old_by_name = {r.name: (i, r) for i, r in enumerate(old_callers)}
    new_by_name = {r.name: (i, r) for i, r in enumerate(new_callers)}
    for name, (_, rule) in new_by_name.items():
        if name not in old_by_name:
            allowed = ", ".join(sorted(_allowed(rule, sorted(new_actions)))) or "nothing"
            extra = "; operator: sees every pending approval" if rule.operator else ""
            changes.append(Change("added", f"caller {name}", f"may use {allowed}{extra}"))
    for name in old_by_name:
        if name not in new_by_name:
            changes.append(Change("removed", f"caller {name}", "no longer matches anything"))
    for name, (_, rule) in new_by_name.items():
        if name in old_by_name:
            changes += _caller_changes(old_by_name[name][1], rule, names)
    common_old = [r.name for r in old_callers if r.name in new_by_name]
    common_new = [r.name for r in new_callers if r.name in old_by_name]
    if common_old != common_new:
        # first match wins: reordering can change which rule a process gets
        changes.append(Change("weaker", "callers", "order of caller rules changed"))
    return PolicyDiff(tuple(changes))

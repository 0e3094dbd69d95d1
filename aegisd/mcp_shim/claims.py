"""The claims that let a repeated tool call re-attach to its own pending approval.

When ``--max-wait`` passes while the person has not yet answered, the daemon keeps the
approval alive and the call returns ``approval_pending``. The daemon lets a later request
join that approval only when it carries the same *claim*: 32 random bytes the shim made for
that (tool, canonical arguments) pair. The claims live here, in this process's memory
only, never on disk, in a result or in a log: another process of the person cannot learn
one, so it cannot collect an approval that this shim started.

Pure bookkeeping with the clock passed in; bounded (``max_entries``), and an entry lives
until the approval's ``expires_at``, or until its call finished (``drop``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["ClaimBook", "claim_key"]

CLAIM_BYTES: Final = 32
# a claim not yet known to be pending lives this long (the first call's max_wait covers it)
_PROVISIONAL: Final = 3600.0


def claim_key(tool: str, arguments: Mapping[str, object]) -> str:
    """The identity of a call: a hash of the tool name and the canonical JSON of its arguments
    (the shim passes the action parameters and body it sends; a hash, so a large body does
    not stay in memory as a key)."""
    canon = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass
class _Entry:
    claim: bytes
    expires_at: float
    binding_message: str = ""


class ClaimBook:
    """``key → claim``, newest last; expired entries vanish when touched."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def claim_for(self, key: str, now: float) -> bytes:
        """The claim of a live entry for ``key``, else a fresh one (evicting the oldest)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > now:
            self._entries.move_to_end(key)
            return entry.claim
        self._expire(now)
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        entry = _Entry(secrets.token_bytes(CLAIM_BYTES), now + _PROVISIONAL)
        self._entries[key] = entry
        return entry.claim

    def pending_until(self, key: str, expires_at: float, binding_message: str = "") -> None:
        """The approval behind ``key`` is pending until ``expires_at``: keep it that long."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.expires_at = expires_at
            entry.binding_message = binding_message or entry.binding_message

    def binding_message(self, key: str) -> str:
        """What the person's phone shows for ``key``'s approval, when known."""
        entry = self._entries.get(key)
        return entry.binding_message if entry is not None else ""

    def drop(self, key: str) -> None:
        """The call ended with an outcome: a repeat is a new request, with a new claim."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]

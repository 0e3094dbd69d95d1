"""The audit record format and chain verification, for the writer, the daemon and aegisctl.

Owns the canonical form and hash of a record, ``VerifyResult`` and its summary ("intact",
"N records pruned" or "BROKEN"), checking lines against the chain (edits, deletions,
reordering, torn lines, ``pruned`` and ``truncated`` records, the writer's tip), listing a
log's files (``audit.jsonl.N`` … ``audit.jsonl``) as a stable set of descriptors, and the
full ``verify_files``. Read-only: it must not write, repair or rotate a log
(``aegisd.daemon.audit``).

Record: ``{"seq": n, "ts": unix_seconds, "event": "...", ...fields, "prev": hex, "hash": hex}``
where ``hash = sha256(prev + canonical_json(record without "hash"))``. The first record of the
first file has ``prev = "0" * 64``; the first record of a rotated-to file is ``event =
"rotated"`` whose ``prev`` is the last hash of the file before it. A chain that does not start
at the genesis is only valid with a ``pruned`` record vouching for its first record.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "GENESIS",
    "VerifyResult",
    "canonical",
    "chain_start",
    "is_record",
    "open_files",
    "record_hash",
    "rotated_files",
    "settle_start",
    "verify_chain",
    "verify_files",
]

GENESIS: Final = "0" * 64


def canonical(record: dict[str, object]) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(prev: str, body: dict[str, object]) -> str:
    """``sha256(prev + canonical(body))`` as hex: the chain link of one record."""
    return hashlib.sha256(prev.encode() + canonical(body)).hexdigest()


_hash = record_hash


@dataclass
class VerifyResult:
    """Outcome of ``verify``: ``ok`` is False on any edit, deletion or reordering."""

    ok: bool = True
    records: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_hash: str = GENESIS
    last_seq: int = 0
    # records before the first kept one that rotation pruned, vouched for by a ``pruned`` record
    pruned: int = 0
    # the latest ``pruned`` record's (first_kept_seq, first_kept_prev)
    prune_claim: tuple[int, str] | None = None
    # every claim seen: a reader racing a rotation may see the next prune's claim too
    prune_claims: set[tuple[int, str]] = field(default_factory=set)
    # the writer's tip from outside the log (the daemon's memory, or its anchor file)
    anchor: tuple[int, str] | None = None
    anchor_seen: bool = False

    def summary(self) -> str:
        if self.ok:
            extra = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
            if self.pruned:
                return (
                    f"audit chain verified, {self.pruned} records pruned: {self.records} "
                    f"records in {self.files} file(s) from seq {self.pruned + 1}{extra}"
                )
            return f"audit chain intact: {self.records} records in {self.files} file(s){extra}"
        return f"audit chain BROKEN: {self.problems[0]}"

    def check_anchor(self) -> None:
        """After the last record: a chain that ends before the anchor was truncated."""
        if self.anchor is None:
            return
        seq = self.anchor[0]
        if self.last_seq < seq:
            self.ok = False
            self.problems.append(
                f"truncated: the log ends at seq {self.last_seq} but aegisd's tip is seq {seq} "
                f"({seq - self.last_seq} record(s) removed from the end)"
            )


def verify_chain(
    lines: list[bytes],
    *,
    prev: str,
    seq: int,
    name: str,
    res: VerifyResult,
    line0: int = 0,
    pause: Callable[[], None] | None = None,
) -> None:
    """Check one file's lines, continuing from (prev, seq); updates ``res`` in place.

    ``line0`` is the number of lines of the same file before ``lines`` (incremental checks);
    ``pause`` is called every 64 lines (a worker thread lets the event loop have the GIL).
    """
    torn_pending: int | None = None
    for lineno, raw in enumerate(lines, line0 + 1):
        if pause is not None and not lineno % 64:
            pause()
        where = f"{name}:{lineno}"
        complete = raw.endswith(b"\n")
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if lineno == line0 + len(lines) and not complete:
                res.ok = False
                res.problems.append(f"{where}: torn last line (incomplete write, e.g. a crash)")
            elif torn_pending is None:
                torn_pending = lineno
                continue
            else:
                res.ok = False
                res.problems.append(f"{where}: not a JSON record")
            continue
        body = {k: v for k, v in rec.items() if k != "hash"}
        if torn_pending is not None:
            if rec.get("event") == "torn_tail" and rec.get("line") == torn_pending:
                res.warnings.append(
                    f"{name}:{torn_pending}: torn line left by a crash, acknowledged at restart"
                )
            else:
                res.ok = False
                res.problems.append(f"{name}:{torn_pending}: not a JSON record")
            torn_pending = None
        if rec.get("prev") != prev:
            res.ok = False
            res.problems.append(f"{where}: chain broken (record deleted, reordered or edited)")
        if rec.get("seq") != seq + 1:
            res.ok = False
            res.problems.append(f"{where}: sequence {rec.get('seq')} after {seq} (gap or reorder)")
        if _hash(str(rec.get("prev")), body) != rec.get("hash"):
            res.ok = False
            res.problems.append(f"{where}: record content does not match its hash (edited)")
        prev = str(rec.get("hash"))
        seq = int(rec["seq"]) if isinstance(rec.get("seq"), int) else seq + 1
        res.records += 1
        _note(rec, seq, prev, where, res)
    if torn_pending is not None:
        res.ok = False
        res.problems.append(f"{name}:{torn_pending}: not a JSON record")
    res.last_hash, res.last_seq = prev, seq


def _note(rec: dict[str, object], seq: int, digest: str, where: str, res: VerifyResult) -> None:
    """What one record says about the chain as a whole (prunes, truncation, the anchor)."""
    if res.anchor is not None and seq == res.anchor[0]:
        res.anchor_seen = True
        if digest != res.anchor[1]:
            res.ok = False
            res.problems.append(f"{where}: differs from aegisd's tip at seq {seq} (rewritten)")
    event = rec.get("event")
    if event == "pruned":
        first, first_prev = rec.get("first_kept_seq"), rec.get("first_kept_prev")
        if isinstance(first, int) and isinstance(first_prev, str):
            res.prune_claim = (first, first_prev)
            res.prune_claims.add(res.prune_claim)
    elif event == "truncated":
        res.ok = False
        res.problems.append(
            f"{where}: aegisd found the log truncated at restart (ended at seq "
            f"{rec.get('found_seq')}, its anchor said seq {rec.get('anchor_seq')})"
        )


def is_record(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def rotated_files(path: Path) -> list[Path]:
    """Oldest first: ``audit.jsonl.N`` … ``audit.jsonl.1``, then ``audit.jsonl``."""
    olds: list[tuple[int, Path]] = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            olds.append((int(suffix), p))
    files = [p for _, p in sorted(olds, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def open_files(path: Path, *, retries: int = 20) -> list[tuple[int, str]]:
    """Descriptors of every file of the log, oldest first, with the names they had.

    A running daemon may rotate meanwhile: the listing is taken again until it names the
    same inodes as the descriptors opened from it, so no file is read twice or skipped.

    Raises:
        OSError: the log kept rotating through every attempt.
    """
    for _ in range(retries):
        opened: list[tuple[int, str, int]] = []
        for p in rotated_files(path):
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            opened.append((fd, p.name, os.fstat(fd).st_ino))
        again = []
        for _, name, _ in opened:
            try:
                again.append(os.stat(path.with_name(name)).st_ino)
            except FileNotFoundError:
                again.append(-1)
        if again == [ino for *_, ino in opened] and (not opened or opened[-1][1] == path.name):
            return [(fd, name) for fd, name, _ in opened]
        for fd, _, _ in opened:
            os.close(fd)
    raise OSError(0, "the log kept rotating while it was listed")


def chain_start(first_line: bytes) -> tuple[int, str] | None:
    """(seq, prev) of the oldest kept record when it is not the genesis (history pruned)."""
    try:
        first = json.loads(first_line)
        link = (int(first.get("seq", 1)), str(first.get("prev")))
    except (ValueError, TypeError, AttributeError):
        return None
    return None if link == (1, GENESIS) else link


def settle_start(res: VerifyResult, start: tuple[int, str] | None, name: str) -> None:
    """A chain that starts after the genesis is valid only if a ``pruned`` record says so."""
    if start is None:
        return
    if start in res.prune_claims:
        res.pruned = start[0] - 1
        return
    res.ok = False
    res.problems.insert(
        0,
        f"{name}:1: the log starts at seq {start[0]}: {start[0] - 1} earlier record(s) were "
        "deleted without a prune record",
    )


def verify_files(path: Path, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Verify the current log and every rotated file before it, as one chain.

    Args:
        path: the current log file.
        anchor: the writer's tip (seq, hash) from outside the log; a chain that ends
            before it, or differs at it, was truncated or rewritten.
    """
    res = VerifyResult(anchor=anchor)
    prev, seq = GENESIS, 0
    start: tuple[int, str] | None = None  # the first kept record, when it is not the genesis
    opened = open_files(path)
    files = [path.with_name(name) for _, name in opened]
    for i, (fd, _) in enumerate(opened):
        p = files[i]
        with open(fd, "rb") as f:
            lines = f.readlines()
        if i > 0 and lines:
            try:
                first = json.loads(lines[0])
            except ValueError:
                first = {}
            if not isinstance(first, dict) or first.get("event") != "rotated":
                res.ok = False
                res.problems.append(f"{p.name}:1: expected a rotation record")
        elif i == 0 and lines:
            start = chain_start(lines[0])
            if start is not None:
                prev, seq = start[1], start[0] - 1
        verify_chain(lines, prev=prev, seq=seq, name=p.name, res=res)
        prev, seq = res.last_hash, res.last_seq
        res.files += 1
    settle_start(res, start, files[0].name if files else path.name)
    res.check_anchor()
    return res

"""The audit log: append-only JSON lines, each record chained to the previous by SHA-256.

Owns the record format, appending (written, flushed and fsynced before ``append`` returns, so
a caller is never told about something the log could lose), rotation that keeps the chain
across files, recovery of a torn last line after a crash, and verification. Records carry no
secrets: callers pass token *fingerprints*, never tokens; ``append`` refuses values under keys
that look like secrets as a last line of defence. This module must not decide what to audit.

Record: ``{"seq": n, "ts": unix_seconds, "event": "...", ...fields, "prev": hex, "hash": hex}``
where ``hash = sha256(prev + canonical_json(record without "hash"))``. The first record of the
first file has ``prev = "0" * 64``; the first record of a rotated-to file is ``event =
"rotated"`` whose ``prev`` is the last hash of the file before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "AuditLog",
    "VerifyResult",
    "canonical",
    "verify_chain",
    "verify_files",
]

GENESIS: Final = "0" * 64
_FORBIDDEN_KEYS: Final = frozenset(
    {"access_token", "refresh_token", "id_token", "client_secret", "secret", "password"}
)


def canonical(record: dict[str, object]) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _hash(prev: str, body: dict[str, object]) -> str:
    return hashlib.sha256(prev.encode() + canonical(body)).hexdigest()


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

    def summary(self) -> str:
        if self.ok:
            extra = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"audit chain intact: {self.records} records in {self.files} file(s){extra}"
        return f"audit chain BROKEN: {self.problems[0]}"


def verify_chain(lines: list[bytes], *, prev: str, seq: int, name: str, res: VerifyResult) -> None:
    """Check one file's lines, continuing from (prev, seq); updates ``res`` in place."""
    torn_pending: int | None = None
    for lineno, raw in enumerate(lines, 1):
        where = f"{name}:{lineno}"
        complete = raw.endswith(b"\n")
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if lineno == len(lines) and not complete:
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
    if torn_pending is not None:
        res.ok = False
        res.problems.append(f"{name}:{torn_pending}: not a JSON record")
    res.last_hash, res.last_seq = prev, seq


def _is_record(raw: bytes) -> bool:
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


def verify_files(path: Path) -> VerifyResult:
    """Verify the current log and every rotated file before it, as one chain."""
    res = VerifyResult()
    prev, seq = GENESIS, 0
    files = rotated_files(path)
    for i, p in enumerate(files):
        with open(p, "rb") as f:
            lines = f.readlines()
        if i > 0 and lines:
            try:
                first = json.loads(lines[0])
            except ValueError:
                first = {}
            if first.get("event") != "rotated":
                res.ok = False
                res.problems.append(f"{p.name}:1: expected a rotation record")
        elif i == 0 and lines and len(files) > 1:
            # the oldest kept file may itself start after pruned history: trust its first prev
            try:
                first = json.loads(lines[0])
                prev, seq = str(first.get("prev")), int(first.get("seq", 1)) - 1
            except (ValueError, TypeError):
                pass
        verify_chain(lines, prev=prev, seq=seq, name=p.name, res=res)
        prev, seq = res.last_hash, res.last_seq
        res.files += 1
    return res


class AuditLog:
    """The daemon's writer. Not thread-safe; the daemon serialises appends.

    Args:
        path: the current log file (created 0600 in a 0700 directory if missing).
        now: wall clock for ``ts``.
        rotate_bytes: rotate when the current file grows past this size.
        fsync: fsync each append (tests of speed may turn it off; the daemon never does).
    """

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], float],
        rotate_bytes: int = 16 * 1024 * 1024,
        keep: int = 10,
        fsync: bool = True,
    ) -> None:
        self.path = path
        self._now = now
        self._rotate_bytes = rotate_bytes
        self._keep = keep
        self._fsync = fsync
        self._fd = -1
        self._prev = GENESIS
        self._seq = 0
        self._size = 0
        self.recovered: list[str] = []

    # ---- opening and recovery ------------------------------------------------------------

    def open(self) -> None:
        """Open for append, find the chain's tip, and acknowledge a torn tail if there is one."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._scan_tip()

    def _scan_tip(self) -> None:
        files = rotated_files(self.path)
        res = VerifyResult()
        prev, seq = GENESIS, 0
        torn_line: int | None = None
        torn_len = 0
        # Only the current file matters for the tip; earlier files give the starting prev.
        for p in files:
            with open(p, "rb") as f:
                lines = f.readlines()
            if p == self.path and lines and not lines[-1].endswith(b"\n"):
                if _is_record(lines[-1]):
                    # a complete record that only lost its newline: finish the line, keep it
                    os.write(self._fd, b"\n")
                    lines[-1] += b"\n"
                else:
                    torn_line, torn_len = len(lines), len(lines[-1])
                    lines = lines[:-1]
            start_prev, start_seq = prev, seq
            if lines:
                try:
                    first = json.loads(lines[0])
                    start_prev, start_seq = str(first["prev"]), int(first["seq"]) - 1
                except (ValueError, KeyError, TypeError):
                    pass
            verify_chain(lines, prev=start_prev, seq=start_seq, name=p.name, res=res)
            prev, seq = res.last_hash, res.last_seq
        self._prev, self._seq = prev, seq
        self._size = os.fstat(self._fd).st_size
        if not res.ok:
            self.recovered.extend(res.problems)
        if torn_line is not None:
            # Terminate the torn bytes so they stay visible, then chain an acknowledgement.
            os.write(self._fd, b"\n")
            self.recovered.append(f"torn last line {torn_line} ({torn_len} bytes) after a crash")
            self.append("torn_tail", line=torn_line, bytes=torn_len)

    # ---- writing -------------------------------------------------------------------------

    @property
    def tip(self) -> tuple[int, str]:
        return self._seq, self._prev

    def append(self, event: str, /, *, _fsync: bool = True, **fields: object) -> dict[str, object]:
        """Write one record and return it; blocking, raises OSError.

        With ``_fsync`` (the default) the record is on disk when this returns. Records about
        connections pass ``_fsync=False``: they become durable with the next synced record,
        since nothing was released on their account.
        """
        bad = _FORBIDDEN_KEYS.intersection(fields)
        if bad:
            raise ValueError(f"refusing to audit secret-looking field(s): {sorted(bad)}")
        if self._fd < 0:
            raise RuntimeError("audit log is not open")
        if self._size >= self._rotate_bytes:
            self._rotate()
        body: dict[str, object] = {"seq": self._seq + 1, "ts": round(self._now(), 6)}
        body["event"] = event
        body.update(fields)
        body["prev"] = self._prev
        digest = _hash(self._prev, body)
        record = dict(body, hash=digest)
        line = canonical(record) + b"\n"
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self._fsync and _fsync:
            os.fsync(self._fd)
        self._prev, self._seq = digest, self._seq + 1
        self._size += len(line)
        return record

    def _rotate(self) -> None:
        if self._fsync:
            os.fsync(self._fd)  # records written without their own fsync are in this file
        os.close(self._fd)
        olds = sorted(
            (int(p.name.rsplit(".", 1)[1]), p)
            for p in self.path.parent.glob(self.path.name + ".*")
            if p.name.rsplit(".", 1)[1].isdigit()
        )
        for n, p in reversed(olds):
            if n >= self._keep:
                p.unlink()
            else:
                p.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = 0
        # the rotation record is the first of the new file and carries the chain over
        self.append("rotated", prev_file=f"{self.path.name}.1")

    @property
    def fsync_enabled(self) -> bool:
        return self._fsync

    def sync_handle(self) -> int:
        """A duplicate of the log's descriptor, for ``sync_fd`` in a worker thread.

        A duplicate, because rotation may close the original meanwhile; rotation fsyncs the
        old file itself, so syncing the duplicate covers every record written before it.
        """
        return os.dup(self._fd)

    @staticmethod
    def sync_fd(fd: int) -> None:
        """fsync and close a descriptor from ``sync_handle`` (blocking; raises OSError)."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def tail(self, n: int = 20) -> Iterator[dict[str, object]]:
        """The last ``n`` parseable records of the current file."""
        try:
            with open(self.path, "rb") as f:
                lines = f.readlines()[-n:]
        except FileNotFoundError:
            return
        for raw in lines:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec

"""The audit log: append-only JSON lines, each record chained to the previous by SHA-256.

Owns the record format, appending (written, flushed and fsynced before ``append`` returns, so
a caller is never told about something the log could lose), rotation that keeps the chain
across files and never deletes one silently (past ``keep_files`` the oldest is pruned and a
``pruned`` record names the first kept sequence number and hash), refusing an unsafe log
(``O_NOFOLLOW``; owner and mode checked with ``fstat``; a directory others own or may write),
recovery of a torn last line after a crash, and verification. Records carry no
secrets: callers pass token *fingerprints*, never tokens; ``append`` refuses values under keys
that look like secrets as a last line of defence. This module must not decide what to audit.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aegisd.audit_files import open_log_fd

__all__ = [
    "GENESIS",
    "AuditLog",
    "VerifyResult",
    "canonical",
    "chain_start",
    "open_files",
    "open_log_fd",
    "record_hash",
    "rotated_files",
    "settle_start",
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


def _first_link(path: Path) -> tuple[int, str]:
    """(seq, prev) of a file's first record."""
    with open(path, "rb") as f:
        rec = json.loads(f.readline())
    return int(rec["seq"]), str(rec["prev"])


def _last_link(path: Path) -> tuple[int, str]:
    """(seq, hash) of a file's last complete record (the chain's tip when it is the newest)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - 65536))
        lines = f.read().splitlines()
    for raw in reversed(lines):
        try:
            rec = json.loads(raw)
            return int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0, GENESIS


class AuditLog:
    """The daemon's writer. Not thread-safe; the daemon serialises appends.

    Args:
        path: the current log file (created 0600 in a 0700 directory if missing).
        now: wall clock for ``ts``.
        rotate_bytes: rotate when the current file grows past this size.
        keep: rotated files kept; 0 keeps every one. Past it the oldest is deleted and a
            ``pruned`` record (first kept seq and prev hash) says so in the chain.
        fsync: fsync each append (tests of speed may turn it off; the daemon never does).
    """

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], float],
        rotate_bytes: int = 16 * 1024 * 1024,
        keep: int = 0,
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
        self.pruned_files = 0  # by this writer, since it opened
        self.bytes_written = 0  # by this writer, since it opened

    # ---- opening and recovery ------------------------------------------------------------

    def open(self) -> None:
        """Open for append, find the chain's tip, and acknowledge a torn tail if there is one.

        Raises:
            ConfigError: the log or its directory is unsafe (see ``open_log_fd``).
        """
        self._fd = open_log_fd(self.path)
        self._scan_tip()

    def _scan_tip(self) -> None:
        """The tip is in the current file (or, when it is empty, the newest rotated one).

        Only those are read: the whole history is the verifier's job, in the background, so
        a large log does not delay the start.
        """
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with open(rfd, "rb") as f:
            lines = f.readlines()
        res = VerifyResult()
        torn_line: int | None = None
        torn_len = 0
        if lines and not lines[-1].endswith(b"\n"):
            if _is_record(lines[-1]):
                # a complete record that only lost its newline: finish the line, keep it
                os.write(self._fd, b"\n")
                lines[-1] += b"\n"
            else:
                torn_line, torn_len = len(lines), len(lines[-1])
                lines = lines[:-1]
        prev, seq = GENESIS, 0
        if lines:
            try:
                first = json.loads(lines[0])
                prev, seq = str(first["prev"]), int(first["seq"]) - 1
            except (ValueError, KeyError, TypeError):
                pass
            verify_chain(lines, prev=prev, seq=seq, name=self.path.name, res=res)
            prev, seq = res.last_hash, res.last_seq
        else:
            olds = rotated_files(self.path)[:-1] if self.path.exists() else []
            if olds:
                seq, prev = _last_link(olds[-1])
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
        return self._write(event, fields, _fsync)

    def _write(self, event: str, fields: dict[str, object], _fsync: bool) -> dict[str, object]:
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
        self.bytes_written += len(line)
        return record

    def _rotate(self) -> None:
        olds = sorted(
            (int(p.name.rsplit(".", 1)[1]), p)
            for p in self.path.parent.glob(self.path.name + ".*")
            if p.name.rsplit(".", 1)[1].isdigit()
        )
        doomed = [p for n, p in olds if self._keep and n >= self._keep]
        if doomed:
            # say so in the chain first (in the file that is about to become .1), then delete:
            # the oldest file that stays is where the chain will start
            kept = [p for n, p in olds if not (self._keep and n >= self._keep)]
            first = _first_link(kept[-1] if kept else self.path)
            self._write(
                "pruned",
                {
                    "files": len(doomed),
                    "first_kept_seq": first[0],
                    "first_kept_prev": first[1],
                    "records": first[0] - 1,
                },
                True,
            )
        if self._fsync:
            os.fsync(self._fd)  # records written without their own fsync are in this file
        os.close(self._fd)
        self._fd = -1
        for p in doomed:
            p.unlink()
        self.pruned_files += len(doomed)
        for n, p in reversed(olds):
            if p not in doomed:
                p.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fd = open_log_fd(self.path)
        self._size = 0
        # the rotation record is the first of the new file and carries the chain over
        self._write("rotated", {"prev_file": f"{self.path.name}.1"}, True)

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

"""The audit log: append-only JSON lines, each record chained to the previous by SHA-256.

Owns the record format, appending (written, flushed and fsynced before ``append`` returns, so
a caller is never told about something the log could lose), rotation that keeps the chain
across files and never deletes one silently (past ``keep_files`` the oldest is pruned and a
``pruned`` record names the first kept sequence number and hash), refusing an unsafe log
(``O_NOFOLLOW``; owner and mode checked with ``fstat``; a directory others own or may write),
and recovery of a torn last line after a crash. The record format and verification are in
``aegisd.daemon.audit_chain`` (re-exported here). Records carry no
secrets: callers pass token *fingerprints*, never tokens; ``append`` refuses values under keys
that look like secrets as a last line of defence. This module must not decide what to audit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from aegisd.daemon.audit_chain import (
    GENESIS,
    VerifyResult,
    canonical,
    chain_start,
    is_record,
    open_files,
    record_hash,
    rotated_files,
    settle_start,
    verify_chain,
    verify_files,
)
from aegisd.daemon.audit_files import open_log_fd

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

_FORBIDDEN_KEYS: Final = frozenset(
    {"access_token", "refresh_token", "id_token", "client_secret", "secret", "password"}
)

_hash = record_hash


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
            if is_record(lines[-1]):
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

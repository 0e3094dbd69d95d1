"""Incremental verification of the running daemon's audit log, outside the append lock.

Owns the position of the last verified byte (the file being followed, its offset, and the
chain's (seq, hash) there) and the accumulated result, so each check reads only what was
appended since the previous one: a ``Status`` on a 170 MB log costs the new bytes, not the
whole history. It follows rotation by inode, stops at the last complete line (a record being
written is read next time), reports a file that shrank below the verified offset, and compares
the chain with the writer's tip (the daemon's memory), which a log truncated at a line
boundary can no longer reach.

Blocking file I/O: ``catch_up`` runs in a worker thread, one at a time (the caller serialises).
It must never take the daemon's append lock, write the log, or decide what to audit. Bytes
already verified are not re-read, so an edit of old records is found by ``aegisctl audit
verify`` (the full check) or at the next start, not here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aegisd.daemon.audit_chain import (
    GENESIS,
    VerifyResult,
    chain_start,
    open_files,
    settle_start,
    verify_chain,
)

__all__ = ["IncrementalVerifier"]

_CHUNK: Final = 8 * 1024 * 1024
_MAX_PROBLEMS: Final = 20


def _let_others_run() -> None:
    """Release the GIL for a moment: parsing is CPU-bound, and without this the event loop
    waits up to the interpreter's switch interval (5 ms) each time it needs the GIL."""
    time.sleep(0)


# errors that say nothing about the log itself
_TRANSIENT: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR})


def _first_seq(lines: list[bytes]) -> int:
    try:
        seq = json.loads(lines[0])["seq"]
    except (IndexError, ValueError, KeyError, TypeError):
        return 0
    return seq if isinstance(seq, int) else 0


@dataclass
class _Position:
    """The file being followed and how far it is verified."""

    fd: int
    ino: int
    name: str
    offset: int = 0
    lines: int = 0
    # the chain link the file starts from, and a running hash of its verified bytes: each
    # check re-hashes that prefix (cheap, no parsing) to notice a record edited in place
    entry: tuple[str, int] = (GENESIS, 0)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class IncrementalVerifier:
    """Verifies ``path`` and its rotated files as one chain, a little more at each call.

    Args:
        path: the current log file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._res = VerifyResult()
        self._pos: _Position | None = None
        self._prev, self._seq = GENESIS, 0
        self._start: tuple[int, str] | None = None
        self._first_name = path.name
        self._files_done = 0
        self.bytes_verified = 0
        self.done_once = False  # the whole history has been verified at least once

    def catch_up(self, tip: tuple[int, str] | None = None, *, recheck: bool = True) -> VerifyResult:
        """Verify what was appended since the last call; blocking.

        Args:
            tip: the writer's (seq, hash) taken before this call started: the chain on disk
                must reach it (else the log was truncated) and match it there.
            recheck: also re-hash the verified part of the current file (an in-place edit);
                it costs reading that part, so the daemon asks for it only now and then.

        Returns:
            A snapshot of the accumulated result (safe to hand to another thread).
        """
        res = self._res
        res.anchor, res.anchor_seen = tip, False
        if tip is not None and tip[0] == self._seq and tip[1] != self._prev:
            self._sticky(f"seq {tip[0]} differs from aegisd's tip (log rewritten)")
        postponed = ""
        try:
            if self._pos is None:
                self._begin()
            elif recheck:
                self._recheck(self._pos)
            self._follow()
        except OSError as exc:
            if exc.errno in _TRANSIENT:
                # out of descriptors or memory for a moment: no finding about the log, and
                # the next check starts where this one stopped
                postponed = f"audit check postponed ({exc.strerror})"
            else:
                self._sticky(f"cannot read the audit log ({exc.strerror})")
        snap = VerifyResult(
            ok=res.ok,
            records=res.records,
            files=self._files_done + (1 if self._pos is not None else 0),
            problems=list(res.problems[:_MAX_PROBLEMS]),
            warnings=list(res.warnings[:_MAX_PROBLEMS]),
            last_hash=self._prev,
            last_seq=self._seq,
            prune_claim=res.prune_claim,
            prune_claims=set(res.prune_claims),
        )
        if postponed:
            snap.warnings.append(postponed)
            return snap  # nothing read this time: no verdict on the tip either
        settle_start(snap, self._start, self._first_name)
        if tip is not None and tip[0] > snap.pruned and self._seq < tip[0]:
            snap.anchor = tip
            snap.check_anchor()
            self._sticky(snap.problems[-1])
        self.done_once = True
        return snap

    def close(self) -> None:
        if self._pos is not None:
            os.close(self._pos.fd)
            self._pos = None

    # ---- internals ------------------------------------------------------------------------

    def _sticky(self, problem: str) -> None:
        """Tampering found once stays reported until the daemon restarts."""
        self._res.ok = False
        if problem not in self._res.problems and len(self._res.problems) < _MAX_PROBLEMS:
            self._res.problems.append(problem)

    def _begin(self) -> None:
        """Verify every rotated file whole, then follow the current one."""
        self._take_over(self._open_listing())

    def _take_over(self, listing: list[tuple[int, str, int]]) -> None:
        """Verify the listed files newer than what is verified; follow the last (current)."""
        *olds, (fd, name, ino) = listing
        for ofd, oname, _ in olds:
            with open(ofd, "rb") as f:
                # the first line says whether it is verified already: a rotation must not
                # cost a read of the whole kept history
                first = f.readline()
                if self._seq and _first_seq([first]) <= self._seq:
                    continue  # verified already (we followed it before it was rotated)
                lines = [first, *f.readlines()]
            self._enter(lines[:1], oname)
            self._verify(lines, oname, 0)
            self._files_done += 1
        self._pos = _Position(fd=fd, ino=ino, name=name)

    def _open_listing(self) -> list[tuple[int, str, int]]:
        """Every file of the log, oldest first, the current one last (``open_files``)."""
        listing = [(fd, name, os.fstat(fd).st_ino) for fd, name in open_files(self.path)]
        if not listing or listing[-1][1] != self.path.name:
            for fd, _, _ in listing:
                os.close(fd)
            raise OSError(0, "the current log file is missing")
        return listing

    def _recheck(self, pos: _Position) -> None:
        """The verified prefix of the followed file must still be what was verified."""
        size = os.fstat(pos.fd).st_size
        same = size >= pos.offset
        if same:
            digest = hashlib.sha256()
            at = 0
            while at < pos.offset:
                data = os.pread(pos.fd, min(_CHUNK, pos.offset - at), at)
                if not data:
                    break
                digest.update(data)
                at += len(data)
            same = digest.digest() == pos.digest.digest()
        if same:
            return
        # changed under us: verify the whole file again, for line-precise problems
        res = VerifyResult()
        data = os.pread(pos.fd, size, 0) if size else b""
        lines = data.splitlines(keepends=True)
        complete = lines if not lines or lines[-1].endswith(b"\n") else lines[:-1]
        verify_chain(complete, prev=pos.entry[0], seq=pos.entry[1], name=pos.name, res=res)
        for problem in res.problems:
            self._sticky(problem)
        self._sticky(
            f"{pos.name}: truncated: it shrank from {pos.offset} to {size} bytes while aegisd "
            "was running"
            if size < pos.offset
            else f"{pos.name}: records already verified were changed in place"
        )
        end = sum(len(raw) for raw in complete)
        pos.offset, pos.lines = end, len(complete)
        pos.digest = hashlib.sha256(data[:end])
        self._prev, self._seq = res.last_hash, res.last_seq

    def _enter(self, first: list[bytes], name: str) -> None:
        """The first line of a file: the oldest may start after pruned history, the others
        must start with the rotation record."""
        if not first:
            return
        if self._files_done == 0 and self._seq == 0:
            self._first_name = name
            self._start = chain_start(first[0])
            if self._start is not None:
                self._seq, self._prev = self._start[0] - 1, self._start[1]
            return
        try:
            rec = json.loads(first[0])
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or rec.get("event") != "rotated":
            self._sticky(f"{name}:1: expected a rotation record")

    def _verify(self, lines: list[bytes], name: str, line0: int) -> None:
        verify_chain(
            lines,
            prev=self._prev,
            seq=self._seq,
            name=name,
            res=self._res,
            line0=line0,
            pause=_let_others_run,
        )
        self._prev, self._seq = self._res.last_hash, self._res.last_seq
        self.bytes_verified += sum(len(raw) for raw in lines)

    def _consume(self, pos: _Position, *, size: int | None) -> None:
        """Verify ``pos``'s complete lines up to ``size`` bytes; ``None``: to its end (the
        file is finished, so a last line without its newline is checked as the torn line it
        is, not left for later)."""
        while size is None or pos.offset < size:
            want = _CHUNK if size is None else min(_CHUNK, size - pos.offset)
            data = os.pread(pos.fd, want, pos.offset)
            if not data:
                return
            end = data.rfind(b"\n") + 1
            if end == 0:
                if size is not None and len(data) < _CHUNK:
                    return  # a record being written: next time
                end = len(data)  # a line longer than a chunk, or a finished file's torn end
            lines = data[:end].splitlines(keepends=True)
            if pos.offset == 0:
                self._enter(lines[:1], pos.name)
                pos.entry = (self._prev, self._seq)
            self._verify(lines, pos.name, pos.lines)
            pos.digest.update(data[:end])
            pos.offset += end
            pos.lines += len(lines)

    def _follow(self) -> None:
        """Read the followed file to its last complete line; move on if it was rotated."""
        while self._pos is not None:
            pos = self._pos
            self._consume(pos, size=os.fstat(pos.fd).st_size)
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                return  # between rotation's renames: next time
            if current == pos.ino:
                return
            # rotated (or replaced): the file we followed is finished. Records appended after
            # its size was read are verified line by line, to its very end.
            self._consume(pos, size=None)
            os.close(pos.fd)
            self._files_done += 1
            self._pos = None
            self._take_over(self._open_listing())

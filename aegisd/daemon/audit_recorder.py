"""The daemon's side of the audit log: group commit, the anchor, background verification.

``AuditRecorder`` appends records in order and makes them durable with group commit, then
moves the anchor (``aegisd.daemon.audit_anchor``) to the tip it just made durable. ``AuditChecker``
verifies the log incrementally in a worker thread, outside the append lock, so a ``Status``
on a large log never stalls requests (issue 13, finding 6): it waits for a catch-up at most
``wait`` seconds and otherwise reports "verifying". Both must not decide what is audited
(callers and ``aegisd.daemon.refusal_limit`` do) and must never let a request proceed whose record
could not be written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Final, NoReturn

import trio

from aegisd.daemon.audit import AuditLog, VerifyResult
from aegisd.daemon.audit_anchor import Anchor, read_anchor
from aegisd.daemon.audit_verify import IncrementalVerifier
from aegisd.errors import Internal

__all__ = ["AuditChecker", "AuditRecorder", "log_tip", "open_audit"]

log = logging.getLogger(__name__)

# re-hash the verified part of the current file (an in-place edit) at most this often: it
# costs reading up to ``audit_rotate_bytes``, which a Status should not pay every time
_RECHECK_EVERY: Final = 5.0
# a result this recent is answered as it is (no thread hop per Status under load)
_FRESH: Final = 1.0
# once the whole history was verified, a Status waits this long for a catch-up
_CATCH_UP_WAIT: Final = 5.0


class AuditRecorder:
    """Appends records in order and makes them durable with group commit.

    Every record is written at once, inline (a short write to the page cache). A durable
    record then waits until an fsync that started after its write has finished; one fsync,
    in a worker thread, covers every record written before it, so concurrent requests share
    fsyncs instead of queueing one each. ``__call__`` returns only when its record is on disk,
    so nobody is told about something a crash could lose. After each fsync the anchor is
    moved to the tip it covered, in the same thread.
    """

    def __init__(self, log_: AuditLog, anchor: Anchor | None = None) -> None:
        self.log = log_
        self.anchor = anchor
        self._lock = trio.Lock()
        self.failures = 0
        self._synced = 0  # every record up to this sequence number is on disk
        self._syncing: trio.Event | None = None
        self._anchor_failed = False

    async def __call__(self, event: str, **fields: object) -> None:
        """Append one record; ``durable=False`` (connection records) does not wait for disk."""
        durable = bool(fields.pop("durable", True))
        async with self._lock:
            try:
                record = self.log.append(event, _fsync=False, **fields)
            except OSError as exc:
                self._failed(exc)
        if durable:
            await self._sync_through(int(str(record["seq"])))

    async def _sync_through(self, seq: int) -> None:
        while self._synced < seq:
            if self._syncing is not None:
                await self._syncing.wait()  # an fsync is running: it may cover us; re-check
                continue
            done = self._syncing = trio.Event()
            target = self.log.tip
            try:
                fd = self.log.sync_handle() if self.log.fsync_enabled else -1
                await trio.to_thread.run_sync(self._sync_and_anchor, fd, target)
                self._synced = max(self._synced, target[0])
            except OSError as exc:
                self._failed(exc)
            finally:
                self._syncing = None
                done.set()

    def _sync_and_anchor(self, fd: int, tip: tuple[int, str]) -> None:
        if fd >= 0:
            self.log.sync_fd(fd)
        if self.anchor is not None:
            try:
                self.anchor.write(*tip)
            except OSError as exc:  # the anchor is a second line; the log itself is durable
                if not self._anchor_failed:
                    log.error("audit anchor %s cannot be written: %s", self.anchor.path, exc)
                self._anchor_failed = True

    def _failed(self, exc: OSError) -> NoReturn:
        self.failures += 1
        log.error("audit write failed: %s", exc.strerror)
        # Fail closed: nothing is released that the log could not record.
        raise Internal("the audit log cannot be written; refusing to continue") from None


class AuditChecker:
    """Incremental verification in the background, on demand and once at start.

    Args:
        log_: the writer, whose tip (in memory) the chain on disk must reach.
    """

    def __init__(self, log_: AuditLog) -> None:
        self._log = log_
        self._verifier = IncrementalVerifier(log_.path)
        self.result: VerifyResult | None = None
        self._wanted = trio.Event()
        self._next_done = trio.Event()  # set when a run that started after a request ends
        self._rechecked = -math.inf  # trio time of the last re-hash of the verified part
        self._finished = -math.inf  # trio time the last run ended

    @property
    def bytes_verified(self) -> int:
        return self._verifier.bytes_verified

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Verify the whole log now, then whatever was appended whenever someone asks."""
        self._wanted.set()
        task_status.started()
        try:
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                done, self._next_done = self._next_done, trio.Event()
                tip = self._log.tip  # before reading: everything up to it is in the file
                now = trio.current_time()
                recheck = now - self._rechecked >= _RECHECK_EVERY
                if recheck and self.result is not None:
                    self._rechecked = now
                self.result = await trio.to_thread.run_sync(
                    functools.partial(self._verifier.catch_up, tip, recheck=recheck),
                    abandon_on_cancel=True,
                )
                self._finished = trio.current_time()
                done.set()
        finally:
            self._verifier_close()

    def _verifier_close(self) -> None:
        # abandoned threads may still hold it at shutdown; closing the fd is what matters
        with contextlib.suppress(OSError):
            self._verifier.close()

    async def check(self, wait: float) -> tuple[VerifyResult | None, bool]:
        """Ask for a catch-up and wait for it at most ``wait`` seconds (before the first whole
        verification finished; afterwards up to ``_CATCH_UP_WAIT``, since a catch-up reads
        only what was appended).

        A result less than ``_FRESH`` seconds old is returned at once, unless the verified
        part is due to be re-hashed.

        Returns:
            The latest result (None before the first run finished) and whether a run that
            covers this request is still going.
        """
        now = trio.current_time()
        if (
            self.result is not None
            and now - self._finished < _FRESH
            and now - self._rechecked < _RECHECK_EVERY
        ):
            return self.result, False  # just checked: a busy daemon's Status stays cheap
        done = self._next_done
        self._wanted.set()
        if self.result is not None and self._verifier.done_once:
            # the history is verified: a catch-up reads only what was appended, so wait for
            # it (bounded) even on a loaded machine rather than answer a stale verdict
            wait = max(wait, _CATCH_UP_WAIT)
        with trio.move_on_after(wait):
            await done.wait()
        return self.result, not done.is_set()


async def log_tip(
    log_: AuditLog,
    every: float = 60.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Log the chain's tip every ``every`` seconds when it moved (the journal under systemd).

    A copy of the tip that no process of the person's can rewrite, even in same-uid mode, and
    even when the daemon is killed with SIGKILL before it could log its stop.
    """
    task_status.started()
    last = log_.tip
    while True:
        await trio.sleep(every)
        if log_.tip != last:
            last = log_.tip
            log.info("audit log %s tip: seq %d hash %s", log_.path, last[0], last[1])


def open_audit(log_: AuditLog, recorder: AuditRecorder) -> dict[str, object] | None:
    """Open the log (refusing an unsafe one) and compare it with its anchor; blocking.

    Returns:
        The fields of a ``truncated`` record when the log ends before (or differs at) the
        anchor the daemon wrote last time, else None. Anchor problems go to ``recovered``.

    Raises:
        ConfigError: the log or its directory is unsafe.
    """
    log_.open()
    anchor = recorder.anchor
    if anchor is None:
        return None
    state = read_anchor(log_.path)
    try:
        anchor.load_key()
    except OSError as exc:
        log_.recovered.append(f"audit anchor key unusable ({exc.strerror})")
        recorder.anchor = None
    if state.problem:
        log_.recovered.append(state.problem)
    seq, digest = log_.tip
    if recorder.anchor is not None:
        recorder.anchor.reset(seq, digest)  # compared: from now on it follows this log
    if state.tip is None:
        return None
    if seq < state.tip[0] or (seq == state.tip[0] and digest != state.tip[1]):
        return {
            "found_seq": seq,
            "found_hash": digest,
            "anchor_seq": state.tip[0],
            "anchor_hash": state.tip[1],
        }
    return None

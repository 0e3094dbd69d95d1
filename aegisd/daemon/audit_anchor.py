"""The audit chain's anchor: the writer's tip kept outside the log, so truncation shows.

A log cut at a line boundary is a valid chain, only shorter; nothing inside it can tell.
The anchor is the last durable (seq, hash), written after every group commit (in turn to
one of two fixed-size slots, one ``pwrite`` each) to ``audit.anchor`` beside ``audit.jsonl``,
with an HMAC-SHA256 keyed by ``audit.anchor-key`` (32 random bytes, 0600, made at the first
start). ``aegisd`` compares it with the log at
start (a log that ends before it is recorded as ``truncated``), and ``aegisctl audit verify``
compares against it (or, while the daemon runs, against the tip the daemon reports from
memory, which no file edit can change). The daemon also logs its tip at start, every minute
when it moved, and at stop (the journal under systemd).

Limits, stated honestly: an account that can read the key file (the daemon's own; in same-uid
mode, the agent too) can forge an anchor; the journal lines and the daemon's memory are then
what remains. This module must not write the log, decide what to audit, or log the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = ["Anchor", "AnchorState", "read_anchor"]

_KEY_BYTES: Final = 32
_DOMAIN: Final = b"aegis-audit-anchor\0"
_SLOT: Final = 256  # two fixed-size slots, written in turn


def _mac(key: bytes, seq: int, digest: str) -> str:
    return hmac.new(key, _DOMAIN + f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


class AnchorState:
    """What an anchor file says: ``tip`` when present and authentic, else a ``problem``."""

    def __init__(self, tip: tuple[int, str] | None, problem: str = "") -> None:
        self.tip = tip
        self.problem = problem


def _paths(log: Path) -> tuple[Path, Path]:
    # not ``audit.jsonl.*``: that is where rotated files live
    return log.with_name(log.stem + ".anchor"), log.with_name(log.stem + ".anchor-key")


def _read_key(path: Path, owner: int) -> bytes | None:
    """The key, when it is a regular file of ``owner`` that nobody else may read or write.

    Anything else (a key planted by another account in a shared directory, a FIFO that would
    block the start) is no key: its anchors are not trusted, and the daemon makes a new one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner or st.st_mode & 0o077:
            return None
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    return key if len(key) == _KEY_BYTES else None


def read_anchor(log: Path) -> AnchorState:
    """The anchor beside ``log``; blocking. No file: ``tip`` None and no problem.

    The MAC is checked when the key is readable (the daemon's account); otherwise the tip is
    taken as it stands and the problem says it is unauthenticated.
    """
    anchor_path, key_path = _paths(log)
    try:
        fd = os.open(anchor_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return AnchorState(None)
    except OSError as exc:
        return AnchorState(None, f"{anchor_path}: cannot read the anchor ({exc.strerror})")
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    slots: list[tuple[int, str, str]] = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            slots.append((int(data["seq"]), str(data["hash"]), str(data["mac"])))
        except (ValueError, KeyError, TypeError):
            continue  # a slot torn by a crash: the other one stands
    if not slots:
        return AnchorState(None, f"{anchor_path}: the anchor is damaged")
    try:
        key = _read_key(key_path, os.stat(log).st_uid)  # the log's owner made the key
    except OSError:
        key = None
    if key is None:
        seq, digest, _ = max(slots)
        return AnchorState((seq, digest), f"{anchor_path}: anchor MAC not checked (no key)")
    good = [
        (seq, digest)
        for seq, digest, mac in slots
        if hmac.compare_digest(mac, _mac(key, seq, digest))
    ]
    if not good:
        return AnchorState(None, f"{anchor_path}: the anchor does not match its MAC (forged?)")
    return AnchorState(max(good))


class Anchor:
    """The daemon's writer of ``<log>.anchor``. Blocking; call from a worker thread.

    Args:
        log: the audit log the anchor belongs to (its directory was checked by the log).
    """

    def __init__(self, log: Path) -> None:
        self.path, self._key_path = _paths(log)
        self._key = b""
        self._fd = -1
        self._slot = 0
        self.written: tuple[int, str] | None = None

    def load_key(self) -> None:
        """Read the key, or make it (0600, ``O_EXCL``) at the first start; raises OSError."""
        key = _read_key(self._key_path, os.geteuid())
        if key is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._key_path)  # a damaged key: the anchor it made is void anyway
            key = secrets.token_bytes(_KEY_BYTES)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self._key_path, flags, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._key = key

    def write(self, seq: int, digest: str) -> None:
        """Record (seq, hash) in the older of the two slots; raises OSError.

        One ``pwrite`` of a fixed-size slot, no fsync: an anchor lost in a crash is an older
        one, which the log still reaches, and a slot torn by one leaves the other standing.
        """
        if self.written == (seq, digest) or not self._key:
            return
        if self._fd < 0:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            self._fd = os.open(self.path, flags, 0o600)
        body = json.dumps({"seq": seq, "hash": digest, "mac": _mac(self._key, seq, digest)})
        line = body.encode().ljust(_SLOT - 1) + b"\n"
        os.pwrite(self._fd, line, self._slot * _SLOT)
        self._slot ^= 1
        self.written = (seq, digest)

    def reset(self, seq: int, digest: str) -> None:
        """Both slots to (seq, hash): at start, once the old anchor was compared."""
        self.written = None
        self.write(seq, digest)
        self.written = None
        self.write(seq, digest)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

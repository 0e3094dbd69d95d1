"""Peer identity: who is on the other end of a Unix socket, and which caller rule they match.

Owns reading peer credentials (Linux ``SO_PEERCRED`` + ``SO_PEERPIDFD``; macOS
``LOCAL_PEERCRED`` + ``LOCAL_PEERTOKEN``), the executable's identity read through
``/proc/<pid>/exe`` (dev, inode, SHA-256 cached by file identity), the command line and the
parent chain, and matching ``[[callers]]`` rules. The uid is what the kernel vouches for;
everything else is defence in depth (a same-uid process can fork and exec a trusted binary
while keeping the socket, reference/platform.md §1.5). This module must not decide policy
beyond "which rule matches"; the broker does the rest.

Across uids (separated mode: aegisd runs as its own account) the kernel lets the daemon read
a peer's ``/proc/<pid>/exe`` only with ``CAP_SYS_PTRACE``, which the daemon does not hold by
default. The identity then falls back to what is world-readable: the command line, the parent
chain and the pidfd against pid reuse. ``PeerIdentity.exe_verified`` is False, and rules
that constrain ``exe`` or ``sha256`` do not match (fail closed); ``explain_no_match`` says so.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import select
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aegisd.config import CallerRule
from aegisd.errors import PeerRejected

__all__ = [
    "EXE_UNVERIFIED",
    "AuditToken",
    "ExeHasher",
    "PeerIdentity",
    "decode_audit_token",
    "decode_xucred",
    "explain_no_match",
    "match_caller",
    "read_peer",
    "uid_allowed",
]

EXE_UNVERIFIED: Final = (
    "exe unverified (daemon runs as another account without CAP_SYS_PTRACE; "
    "use uids/argv rules or install with --verify-exe)"
)

SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)
# macOS (xnu bsd/sys/un.h): SOL_LOCAL=0, LOCAL_PEERCRED=1, LOCAL_PEERPID=2, LOCAL_PEERTOKEN=6
SOL_LOCAL: Final = 0
LOCAL_PEERCRED: Final = 1
LOCAL_PEERTOKEN: Final = 6
_XUCRED: Final = struct.Struct("IIh16I")  # version, uid, ngroups, groups[16] (76 bytes)
_AUDIT_TOKEN: Final = struct.Struct("8I")
_MAX_PARENTS: Final = 4


@dataclass(frozen=True)
class AuditToken:
    """macOS ``audit_token_t`` decoded (xnu osfmk/mach/message.h)."""

    auid: int
    euid: int
    egid: int
    ruid: int
    rgid: int
    pid: int
    asid: int
    pidversion: int


def decode_xucred(data: bytes) -> tuple[int, tuple[int, ...]]:
    """``struct xucred`` -> (effective uid, groups). Raises ValueError on a bad version/size."""
    if len(data) < _XUCRED.size:
        raise ValueError(f"xucred too short: {len(data)} bytes")
    version, uid, ngroups, *groups = _XUCRED.unpack_from(data)
    if version != 0:
        raise ValueError(f"unknown xucred version {version}")
    ngroups = max(0, min(ngroups, 16))
    return uid, tuple(groups[:ngroups])


def decode_audit_token(data: bytes) -> AuditToken:
    """``audit_token_t`` (8 x u32) -> AuditToken; [7] is the pid version used against reuse."""
    if len(data) < _AUDIT_TOKEN.size:
        raise ValueError(f"audit token too short: {len(data)} bytes")
    return AuditToken(*_AUDIT_TOKEN.unpack_from(data))


@dataclass(frozen=True)
class PeerIdentity:
    """What we know about a connected process. ``exe`` is empty when it could not be read."""

    uid: int
    gid: int
    pid: int
    exe: str = ""
    exe_id: tuple[int, int, int, int] | None = None  # (st_dev, st_ino, st_size, st_mtime_ns)
    argv: tuple[str, ...] = ()
    parents: tuple[tuple[int, str], ...] = ()
    pidfd_verified: bool = False
    platform: str = sys.platform
    notes: tuple[str, ...] = field(default=())
    # False when /proc/<pid>/exe could not be read: ``exe`` is then "" and exe/sha256 rules
    # never match; ``argv[0]`` is only what the process claims to be
    exe_verified: bool = True
    # the process's start time (Linux: /proc/<pid>/stat field 22, clock ticks since boot;
    # 0 when unknown): with uid and pid it names one process, even after its pid is reused
    start_time: int = 0

    @property
    def key(self) -> tuple[int, int, int]:
        """(uid, pid, start time): one process, for per-peer accounting (conn_limits.py)."""
        return (self.uid, self.pid, self.start_time)

    def describe(self) -> str:
        if not self.exe_verified:
            claimed = self.argv[0] if self.argv else "?"
            return f"pid {self.pid} uid {self.uid} exe unverified (argv[0] {claimed})"
        return f"pid {self.pid} uid {self.uid} exe {self.exe or '?'}"


def uid_allowed(uid: int, own_uid: int, allowed: Sequence[int]) -> bool:
    """The kernel-vouched check: the daemon's own uid or one listed in config."""
    return uid == own_uid or uid in allowed


def _read_cmdline(proc: str) -> tuple[str, ...]:
    try:
        with open(f"{proc}/cmdline", "rb") as f:
            raw = f.read(64 * 1024)
    except OSError:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)


def _parents(pid: int, proc_root: str) -> tuple[tuple[int, str], ...]:
    chain: list[tuple[int, str]] = []
    current = pid
    for _ in range(_MAX_PARENTS):
        try:
            with open(f"{proc_root}/{current}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            # comm may contain spaces and parens: ppid is the 2nd field after the last ')'
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if ppid <= 1:
            if ppid == 1:
                chain.append((1, _comm(1, proc_root)))
            break
        chain.append((ppid, _comm(ppid, proc_root)))
        current = ppid
    return tuple(chain)


def _start_time(proc: str) -> int:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks after boot), or 0."""
    try:
        with open(f"{proc}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
        # comm may contain spaces and parens: fields resume after the last ')' at field 3
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _comm(pid: int, proc_root: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def _pidfd_alive(pidfd: int) -> bool:
    # A pidfd polls readable once its process has exited. Unlike pidfd_send_signal(0) this
    # needs no permission over the process, so it also works for peers of another uid.
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def read_peer(sock: socket.socket, proc_root: str = "/proc") -> PeerIdentity:
    """Identify the peer of a connected AF_UNIX stream socket (blocking; call in a thread).

    Linux order, per reference/platform.md §1.3: SO_PEERCRED, SO_PEERPIDFD, read /proc,
    then check the pidfd still names a live process so the /proc data was about the process
    that connected (no PID-reuse race).
    """
    if sys.platform.startswith("linux"):
        return _read_peer_linux(sock, proc_root)
    if sys.platform == "darwin":
        return _read_peer_macos(sock)
    raise PeerRejected("peer identification is not supported on this platform")


def _read_peer_linux(sock: socket.socket, proc_root: str) -> PeerIdentity:
    pid, uid, gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    pidfd: int | None = None
    notes: list[str] = []
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4)
        pidfd = struct.unpack("i", raw)[0]
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.ENODATA, errno.EINVAL):
            raise
        notes.append("no SO_PEERPIDFD (kernel < 6.5): pid reuse not excluded")
    try:
        if pidfd is not None and not _pidfd_alive(pidfd):
            raise PeerRejected("peer exited before it could be identified")
        proc = f"{proc_root}/{pid}"
        exe = ""
        exe_id: tuple[int, int, int, int] | None = None
        exe_verified = True
        try:
            exe = os.readlink(f"{proc}/exe")
            # stat through the magic link: the running image, even if the path was replaced
            st = os.stat(f"{proc}/exe")
            exe_id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as exc:
            exe, exe_id, exe_verified = "", None, False
            if exc.errno in (errno.EACCES, errno.EPERM):
                notes.append(EXE_UNVERIFIED)
            else:
                notes.append(
                    f"executable not readable ({errno.errorcode.get(exc.errno or 0, '?')})"
                )
        argv = _read_cmdline(proc)
        start_time = _start_time(proc)
        parents = _parents(pid, proc_root)
        verified = False
        if pidfd is not None:
            if not _pidfd_alive(pidfd):
                raise PeerRejected("peer exited before it could be identified")
            verified = True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return PeerIdentity(
        uid=uid,
        gid=gid,
        pid=pid,
        exe=exe,
        exe_id=exe_id,
        argv=argv,
        parents=parents,
        pidfd_verified=verified,
        platform="linux",
        notes=tuple(notes),
        exe_verified=exe_verified,
        start_time=start_time,
    )


def _read_peer_macos(sock: socket.socket) -> PeerIdentity:  # pragma: no cover - not on CI
    uid, groups = decode_xucred(sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, _XUCRED.size))
    token = decode_audit_token(sock.getsockopt(SOL_LOCAL, LOCAL_PEERTOKEN, _AUDIT_TOKEN.size))
    import psutil

    exe = ""
    argv: tuple[str, ...] = ()
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(token.pid)
        exe = proc.exe()
        argv = tuple(proc.cmdline())
    # LOCAL_PEERTOKEN is looked up at query time (last user of the socket): re-read and
    # compare the pid version so a recycled pid is not mistaken for the caller.
    again = decode_audit_token(sock.getsockopt(SOL_LOCAL, LOCAL_PEERTOKEN, _AUDIT_TOKEN.size))
    if again.pidversion != token.pidversion or again.pid != token.pid:
        raise PeerRejected("peer changed during identification")
    exe_id = None
    if exe:
        with contextlib.suppress(OSError):
            st = os.stat(exe)
            exe_id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return PeerIdentity(
        uid=uid,
        gid=groups[0] if groups else token.egid,
        pid=token.pid,
        exe=exe,
        exe_id=exe_id,
        argv=argv,
        pidfd_verified=True,
        exe_verified=bool(exe),
        platform="darwin",
        start_time=token.pidversion,  # tells a reused pid apart, as a start time does
        notes=("macOS: executable read by pid (psutil), audit token version checked",),
    )


class ExeHasher:
    """SHA-256 of executables, cached by file identity so nothing is re-hashed per request.

    The cache is keyed by (st_dev, st_ino, st_size, st_mtime_ns) of the running image; hashing
    reads ``/proc/<pid>/exe`` (the running bytes), never the path string.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._cache: dict[tuple[int, int, int, int], str] = {}
        self._max = max_entries

    def cached(self, peer: PeerIdentity) -> str | None:
        return self._cache.get(peer.exe_id) if peer.exe_id else None

    def digest(self, peer: PeerIdentity, proc_root: str = "/proc") -> str | None:
        """Blocking; run in a worker thread. None if the image cannot be read."""
        if peer.exe_id is None:
            return None
        hit = self._cache.get(peer.exe_id)
        if hit is not None:
            return hit
        path = f"{proc_root}/{peer.pid}/exe" if peer.platform == "linux" else peer.exe
        try:
            with open(path, "rb") as f:
                value = hashlib.file_digest(f, "sha256").hexdigest()
                st = os.fstat(f.fileno())
        except OSError:
            return None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != peer.exe_id:
            # the process exec'd another image since it was identified: this hash is not the
            # hash of ``exe_id``, and caching it would vouch for the wrong binary
            return None
        if len(self._cache) >= self._max:
            self._cache.pop(next(iter(self._cache)))
        self._cache[peer.exe_id] = value
        return value


def _exe_matches(peer: PeerIdentity, patterns: Sequence[str]) -> bool:
    exe = peer.exe
    if exe.endswith(" (deleted)"):
        return False  # the binary was replaced since it started; never trust the old image
    for pattern in patterns:
        resolved = os.path.realpath(os.path.expanduser(pattern))
        if exe in (pattern, resolved) or fnmatch.fnmatchcase(exe, pattern):
            return True
    return False


def match_caller(
    peer: PeerIdentity, rules: Sequence[CallerRule], exe_sha256: str | None
) -> CallerRule | None:
    """The first rule that matches the peer, or None.

    A rule matches when every condition it states holds: ``uids`` lists the peer's uid,
    ``exe`` names its executable (resolved path or glob), ``sha256`` pins the image's digest,
    and some ``argv`` glob matches the space-joined command line. A rule with ``exe`` or
    ``sha256`` never matches a peer whose executable could not be verified.
    """
    cmdline = " ".join(peer.argv)
    for rule in rules:
        if rule.uids and peer.uid not in rule.uids:
            continue
        if (rule.exe or rule.sha256) and not peer.exe_verified:
            continue
        if rule.exe and not _exe_matches(peer, rule.exe):
            continue
        if rule.sha256 and (exe_sha256 is None or exe_sha256 not in rule.sha256):
            continue
        if rule.argv and not any(fnmatch.fnmatchcase(cmdline, p) for p in rule.argv):
            continue
        return rule
    return None


def explain_no_match(peer: PeerIdentity, rules: Sequence[CallerRule]) -> str:
    """Why no caller rule matched ``peer``: what aegisd saw and each rule's first failing test.

    For the rejected caller's error and the daemon's log. It names rules and conditions, not
    their patterns (in separated mode the caller cannot read the policy file), and shows the
    peer only what it is anyway (its own executable and command line).
    """
    cmdline = " ".join(peer.argv)
    shown = cmdline if len(cmdline) <= 200 else cmdline[:197] + "..."
    exe = (peer.exe or "?") if peer.exe_verified else "unverified"
    saw = f"aegisd saw exe {exe} and argv {shown!r}"
    if not rules:
        return f"no [[callers]] rules are configured ({saw})"
    reasons: list[str] = []
    for rule in rules[:_EXPLAINED_RULES]:
        if rule.uids and peer.uid not in rule.uids:
            why = f"uid {peer.uid} is not listed"
        elif (rule.exe or rule.sha256) and not peer.exe_verified:
            why = EXE_UNVERIFIED
        elif rule.exe and not _exe_matches(peer, rule.exe):
            why = "exe does not match"
        elif rule.argv and not any(fnmatch.fnmatchcase(cmdline, p) for p in rule.argv):
            why = "argv does not match"
        elif rule.sha256:
            why = "the executable's sha256 matches no pin"
        else:  # pragma: no cover - such a rule would have matched
            why = "matches"
        reasons.append(f"{rule.name!r}: {why}")
    if len(rules) > _EXPLAINED_RULES:
        reasons.append(f"and {len(rules) - _EXPLAINED_RULES} more rule(s)")
    return f"no [[callers]] rule matches this process ({saw}; " + "; ".join(reasons) + ")"


_EXPLAINED_RULES: Final = 10  # the message stays one readable line (and far below a frame)

"""One aegisd per audit log: an exclusive ``flock`` on ``.<audit log>.lock``, held for life.

Owns the lock file beside the audit log (issue 13.10): two daemons appending to one log break
its chain for good, and the socket cannot tell, since a deleted socket lets a second daemon
bind a fresh one. ``take`` opens ``.audit.jsonl.lock`` (``O_NOFOLLOW | O_CLOEXEC``, 0600, owned by
the daemon's uid), takes ``LOCK_EX | LOCK_NB`` and writes the holder's pid and socket into it
for diagnostics; the kernel drops the lock when the process ends, however it ends, so a stale
file never blocks a start. ``probe`` is the reading side (``aegisctl doctor``): who holds the
lock, without creating or changing anything.

The file is never unlinked: removing a lock file races with a daemon that has just opened it.
It must not touch the audit log itself, nor sockets; blocking calls are local and short.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, final

import trio

from aegisd.errors import AlreadyRunning, ConfigError, UnsafeFile

__all__ = ["InstanceLock", "Probe", "lock_path", "probe", "socket_gone", "take", "without_socket"]

_OPEN_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_PROBE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# doctor's probe holds a shared lock for microseconds; a daemon starting just then retries
_ATTEMPTS: Final = 5
_RETRY_SECONDS: Final = 0.05


def lock_path(audit_path: Path) -> Path:
    """``audit.jsonl`` → ``.audit.jsonl.lock`` beside it (hidden, and no ``audit.jsonl.*``
    name: those are the rotated files)."""
    return audit_path.with_name(f".{audit_path.name}.lock")


@final
class InstanceLock:
    """The held lock; ``release`` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Idempotent. Closing the descriptor releases the flock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


@dataclass(frozen=True)
class Probe:
    """What ``probe`` found. ``state``: ``held`` (a daemon runs), ``free`` (none does),
    ``absent`` (no lock file: no daemon ever ran on this log), ``unknown`` (cannot tell,
    ``detail`` says why, e.g. the lock belongs to another account)."""

    state: Literal["held", "free", "absent", "unknown"]
    pid: int | None = None
    socket: str = ""
    detail: str = ""


def _holder(fd: int) -> tuple[int | None, str]:
    """The pid and socket the holder wrote (diagnostics only: the flock is the truth)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return None, ""
    fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "")
    return (int(pid) if pid.isdigit() else None), fields.get("socket", "")


def _open_own(path: Path) -> int:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(
                f"{path}: the audit log's lock file is a symlink; refusing it",
                fix=f"rm {path}",
            ) from None
        raise ConfigError(f"{path}: cannot open the audit log's lock ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeFile(
            f"{path}: the audit log's lock file is not a regular file of this account "
            f"(owner uid {st.st_uid}); refusing it",
            fix=f"rm {path}",
        )
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)  # whoever may open it could hold it and block every start
    return fd


def _refusal(path: Path, audit_path: Path, pid: int | None, socket: str) -> AlreadyRunning:
    who = f"another aegisd (pid {pid})" if pid is not None else "another aegisd"
    where = f" and listens on {socket}" if socket else ""
    gone = ""
    if socket and not os.path.lexists(socket):
        gone = f"; its socket {socket} is gone, so clients cannot reach it"
    stop = f"stop it first (kill -TERM {pid})" if pid is not None else "stop it first"
    return AlreadyRunning(
        f"{who} already writes the audit log {audit_path}{where}{gone}: {stop}, "
        f"or give this one another [daemon] audit_log (lock: {path})"
    )


async def take(audit_path: Path, socket: Path) -> InstanceLock:
    """Hold the lock of ``audit_path`` for this process, or refuse.

    Raises:
        AlreadyRunning: another process holds it (the message names its pid and socket).
        UnsafeFile: the lock file is a symlink or belongs to another account.
        ConfigError: it cannot be created or opened.
    """
    path = lock_path(audit_path)
    fd = _open_own(path)
    try:
        for attempt in range(_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _ATTEMPTS - 1:
                    raise _refusal(path, audit_path, *_holder(fd)) from None
                await trio.sleep(_RETRY_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()}\nsocket={socket}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return InstanceLock(path, fd)


def probe(audit_path: Path) -> Probe:
    """Whether a daemon holds the lock of ``audit_path``; never creates or changes a file.

    The reading side takes a shared lock for an instant (``take`` retries meanwhile) and lets
    it go. A lock the caller cannot open (separated mode: the daemon's 0600 file in its 0700
    state directory) is ``unknown``, never a guess.
    """
    path = lock_path(audit_path)
    try:
        fd = os.open(path, _PROBE_FLAGS)
    except FileNotFoundError:
        return Probe("absent")
    except OSError as exc:
        return Probe("unknown", detail=f"cannot open {path} ({exc.strerror})")
    try:
        pid, socket = _holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Probe("held", pid, socket)
        except OSError as exc:
            return Probe("unknown", detail=f"cannot lock {path} ({exc.strerror})")
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return Probe("free")
    finally:
        os.close(fd)


def without_socket(socket: Path, audit_path: Path) -> Probe | None:
    """Nothing at ``socket``: what the lock of ``audit_path`` says (a daemon may run without
    its socket, issue 13.10). None when something is at ``socket``: ask it instead."""
    try:
        os.lstat(socket)
        return None
    except FileNotFoundError:
        return probe(audit_path)
    except OSError:
        return None  # cannot look (a directory we may not enter): the connection said why


def socket_gone(pid: int | None, socket: Path | str) -> str:
    """How ``status`` and ``doctor`` say it: the daemon runs, its socket does not."""
    who = pid if pid is not None else "?"
    return f"aegisd is running (pid {who}) but its socket {socket} is gone: no client can reach it"

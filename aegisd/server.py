"""The listening socket: creation or activation, its permission checks, and sd_notify.

Owns the private directory (0700, ours, not a symlink) and the socket (0600), both verified
after bind; refusing to start beside a live daemon and removing a dead one's stale socket;
systemd (``LISTEN_FDS``/``LISTEN_PID``) and launchd (``launch_activate_socket``) activation;
and ``sd_notify``. It must not parse messages or make policy decisions (``daemon.py`` and
``connection.py`` do).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from aegisd.errors import AlreadyRunning, ConfigError

__all__ = [
    "Listener",
    "check_socket_mode",
    "max_path_length",
    "notify",
    "open_listener",
    "prepare_directory",
]

SD_LISTEN_FDS_START: Final = 3


def max_path_length() -> int:
    """Usable bytes in ``sun_path``: 107 on Linux, 103 on macOS and the BSDs."""
    return 107 if sys.platform.startswith("linux") else 103


@dataclass
class Listener:
    sock: trio.socket.SocketType
    path: Path
    activated: str | None  # "systemd", "launchd" or None when we bound it ourselves
    owns_path: bool  # remove the path on exit

    def close(self) -> None:
        self.sock.close()
        if self.owns_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def prepare_directory(directory: Path, uid: int | None = None) -> None:
    """Create the socket's directory 0700, or check an existing one; ``ConfigError`` if unsafe."""
    uid = os.getuid() if uid is None else uid
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{directory}: socket directory is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory}: socket directory is not a directory")
    if st.st_uid != uid:
        raise ConfigError(
            f"{directory}: socket directory is owned by uid {st.st_uid}, not {uid}; refusing"
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{directory}: socket directory is group- or world-writable "
            f"(mode {stat.S_IMODE(st.st_mode):o}); fix with chmod 700 or remove it"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    st = os.lstat(directory)
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise ConfigError(f"{directory}: could not make the socket directory private (0700)")


def check_socket_mode(path: Path, uid: int | None = None) -> None:
    """The socket must be ours and 0600 (systemd defaults to 0666 unless SocketMode= is set)."""
    uid = os.getuid() if uid is None else uid
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path}: not a socket")
    if st.st_uid != uid:
        raise ConfigError(f"{path}: socket owned by uid {st.st_uid}, not {uid}")
    if stat.S_IMODE(st.st_mode) & 0o177:
        raise ConfigError(
            f"{path}: socket mode is {stat.S_IMODE(st.st_mode):o}, must be 600 "
            "(for systemd set SocketMode=0600)"
        )


def _live_daemon_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise ConfigError(f"{path}: cannot probe the existing socket ({exc.strerror})") from None
    finally:
        probe.close()
    return True


def _activated_fd() -> tuple[int, str] | None:
    env = os.environ
    if env.get("LISTEN_PID") == str(os.getpid()) and env.get("LISTEN_FDS"):
        try:
            n = int(env["LISTEN_FDS"])
        except ValueError:
            n = 0
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)  # children must not think the fds are theirs
        if n >= 1:
            return SD_LISTEN_FDS_START, "systemd"
    if sys.platform == "darwin":  # pragma: no cover - needs launchd
        from aegisd.service_files import LAUNCHD_SOCKET_KEY

        fd = _launchd_fd(LAUNCHD_SOCKET_KEY)
        if fd is not None:
            return fd, "launchd"
    return None


def _launchd_fd(name: str) -> int | None:  # pragma: no cover - macOS only
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    err = libc.launch_activate_socket(name.encode(), ctypes.byref(fds), ctypes.byref(count))
    if err != 0 or count.value == 0:
        return None
    fd = int(fds[0])
    libc.free(fds)
    return fd


async def open_listener(path: Path, backlog: int = 128) -> Listener:
    """Adopt an activated socket or bind ``path`` privately; raise ``ConfigError`` if unsafe."""
    activated = _activated_fd()
    if activated is not None:
        fd, how = activated
        std = socket.socket(fileno=fd)
        if std.family != socket.AF_UNIX or std.type != socket.SOCK_STREAM:
            raise ConfigError(f"{how} passed a socket that is not AF_UNIX/SOCK_STREAM")
        bound = std.getsockname()
        real = Path(bound) if isinstance(bound, str) and bound else path
        prepare_directory(real.parent)
        check_socket_mode(real)
        std.setblocking(False)
        return Listener(trio.socket.from_stdlib_socket(std), real, how, owns_path=False)

    raw = os.fsencode(path)
    if len(raw) > max_path_length():
        raise ConfigError(
            f"{path}: socket path is {len(raw)} bytes, the limit is {max_path_length()}; "
            "set [daemon] socket to a shorter path"
        )
    prepare_directory(path.parent)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"{path}: exists and is not a socket; refusing to replace it")
        if _live_daemon_answers(path):
            raise AlreadyRunning(f"{path}: another aegisd is already running there")
        os.unlink(path)  # a dead daemon's stale socket
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no window in which the socket is reachable by others
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old)
    try:
        os.chmod(path, 0o600)
        check_socket_mode(path)
        prepare_directory(path.parent)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return Listener(sock, path, None, owns_path=True)


def notify(message: str) -> bool:
    """sd_notify: one datagram to ``$NOTIFY_SOCKET`` (``@`` = abstract). False if not set."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    addr = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError:
            return False
    return True

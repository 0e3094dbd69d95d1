"""The listening socket: creation or activation, its permission checks, and sd_notify.

Owns the socket's directory (created 0700 when missing, or 0750 with ``[daemon]
socket_group`` in separated mode; an existing one is checked, never chmodded) and the socket
(0600, or 0660 with the socket group), both verified after bind; refusing to start beside a
live daemon and removing a dead one's stale socket; systemd (``LISTEN_FDS``/``LISTEN_PID``)
and launchd (``launch_activate_socket``) activation; and ``sd_notify``. It must not parse
messages or make policy decisions (``daemon.py`` and ``connection.py`` do).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from aegisd.config import max_socket_path_length
from aegisd.errors import AlreadyRunning, ConfigError

__all__ = [
    "Access",
    "Listener",
    "access_for",
    "check_socket_mode",
    "notify",
    "open_listener",
    "prepare_directory",
]

SD_LISTEN_FDS_START: Final = 3


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


@dataclass(frozen=True)
class Access:
    """Who may reach the socket: only the daemon's uid, or also one group (separated mode).

    ``gid`` None: directory 0700, socket 0600 (same-uid mode). Otherwise the directory is
    0750 or 0710 with that group, and the socket 0660 with that group; the daemon still
    checks every peer's uid (``SO_PEERCRED``), group membership only lets a process connect.
    """

    uid: int
    gid: int | None = None
    group: str = ""

    @property
    def dir_mode(self) -> int:
        return 0o700 if self.gid is None else 0o750

    @property
    def socket_mode(self) -> int:
        return 0o600 if self.gid is None else 0o660


def access_for(socket_group: str | None, uid: int | None = None) -> Access:
    """The ``Access`` for ``[daemon] socket_group`` (``ConfigError`` if the group is unknown)."""
    uid = os.getuid() if uid is None else uid
    if not socket_group:
        return Access(uid)
    try:
        gid = grp.getgrnam(socket_group).gr_gid
    except KeyError:
        raise ConfigError(
            f"[daemon] socket_group: no group named {socket_group!r} on this machine "
            "(sudo aegisctl service install --system creates aegis-clients)"
        ) from None
    return Access(uid, gid, socket_group)


def _chgrp(path: Path, access: Access) -> None:
    assert access.gid is not None
    try:
        os.chown(path, -1, access.gid)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot give it to group {access.group} ({exc.strerror}); aegisd's "
            f"account must be a member (SupplementaryGroups={access.group} in the unit, or "
            f"usermod -aG {access.group} <account>)"
        ) from None


def _fix_hint(directory: Path, access: Access) -> str:
    if access.gid is None:
        return f"fix with `chmod 700 {directory}`, or remove it and aegisd creates it"
    return (
        f"fix with `chown {access.uid}:{access.group} {directory} && chmod 750 {directory}`, "
        "or remove it and aegisd creates it"
    )


def prepare_directory(
    directory: Path, access: Access | None = None, *, activated: bool = False
) -> None:
    """Create the socket's directory, or check an existing one; ``ConfigError`` if unsafe.

    A missing directory is created with the mode ``access`` asks for. An existing one is never
    changed (it may be ``/run``, the working directory of a relative ``socket``, or someone
    else's): it must be ours, not a symlink, writable by nobody else, and have exactly the
    mode of ``access`` (0700; 0750 or 0710 with the socket group). The directory of an
    activated socket was made by the service manager: it must be ours or root's and writable
    by nobody else, whatever its group.
    """
    access = access or Access(os.getuid())
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
            if access.gid is not None:
                _chgrp(directory, access)
                os.chmod(directory, access.dir_mode)  # our own new directory, not a user's
        st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{directory}: socket directory is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory}: socket directory is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{directory}: socket directory is group- or world-writable (mode {mode:o}); "
            + _fix_hint(directory, access)
        )
    if activated and st.st_uid in (0, access.uid):
        # systemd or launchd made it for the socket it passed us (RuntimeDirectory= or the
        # socket unit's DirectoryMode=): ours or root's and writable by nobody else is enough
        return
    if st.st_uid != access.uid:
        raise ConfigError(
            f"{directory}: socket directory is owned by uid {st.st_uid}, not {access.uid}; "
            "refusing (set [daemon] socket to a path in a directory of aegisd's own)"
        )
    if access.gid is None:
        if mode != 0o700:
            raise ConfigError(
                f"{directory}: socket directory has mode {mode:o}, must be 700 (private); "
                + _fix_hint(directory, access)
            )
        return
    if st.st_gid != access.gid or mode not in (0o750, 0o710):
        raise ConfigError(
            f"{directory}: socket directory is {mode:o} group {st.st_gid}, must be 750 or 710 "
            f"group {access.group} ({access.gid}); " + _fix_hint(directory, access)
        )


def check_socket_mode(path: Path, access: Access | None = None) -> None:
    """The socket must be ours and 0600, or 0660 with the socket group.

    systemd defaults to 0666 unless ``SocketMode=`` is set.
    """
    access = access or Access(os.getuid())
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path}: not a socket")
    if st.st_uid != access.uid:
        raise ConfigError(f"{path}: socket owned by uid {st.st_uid}, not {access.uid}")
    mode = stat.S_IMODE(st.st_mode)
    if access.gid is None:
        if mode & 0o177:
            raise ConfigError(
                f"{path}: socket mode is {mode:o}, must be 600 (for systemd set SocketMode=0600)"
            )
        return
    if mode & 0o117 or (mode & 0o070 and st.st_gid != access.gid):
        raise ConfigError(
            f"{path}: socket mode is {mode:o} group {st.st_gid}, must be 660 group "
            f"{access.group} (for systemd: SocketMode=0660, SocketGroup={access.group})"
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
        from aegisd.service.service_files import LAUNCHD_SOCKET_KEY

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


async def open_listener(path: Path, backlog: int = 128, access: Access | None = None) -> Listener:
    """Adopt an activated socket or bind ``path`` privately; raise ``ConfigError`` if unsafe."""
    access = access or Access(os.getuid())
    activated = _activated_fd()
    if activated is not None:
        fd, how = activated
        std = socket.socket(fileno=fd)
        if std.family != socket.AF_UNIX or std.type != socket.SOCK_STREAM:
            raise ConfigError(f"{how} passed a socket that is not AF_UNIX/SOCK_STREAM")
        bound = std.getsockname()
        real = Path(bound) if isinstance(bound, str) and bound else path
        prepare_directory(real.parent, access, activated=True)
        check_socket_mode(real, access)
        std.setblocking(False)
        return Listener(trio.socket.from_stdlib_socket(std), real, how, owns_path=False)

    raw = os.fsencode(path)
    if len(raw) > max_socket_path_length():
        raise ConfigError(
            f"{path}: socket path is {len(raw)} bytes, the limit is {max_socket_path_length()}; "
            "set [daemon] socket to a shorter path"
        )
    prepare_directory(path.parent, access)
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
        if access.gid is not None:
            _chgrp(path, access)
        os.chmod(path, access.socket_mode)
        check_socket_mode(path, access)
        prepare_directory(path.parent, access)  # unchanged since we bound in it
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

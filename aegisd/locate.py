"""Clients find aegisd's socket and check, before sending a byte, that aegisd is on it.

Owns socket discovery for the SDK, the shim and aegisctl (an explicit path or
``AEGIS_SOCKET``, else the person's runtime-dir socket when it exists, else the system
socket of separated mode) and the server check made right after ``connect``: the listening
process's uid (``SO_PEERCRED``; ``LOCAL_PEERCRED`` on macOS) must be the client's own (same-uid
mode) or the daemon account's (separated mode), and the socket's directory must be writable by
nobody but that uid or root. Root is not accepted as a server on its own account: aegisd never
needs to run as root, and a root-owned socket in an odd place is as foreign as any other.
A planted socket (another user's fake server at a custom path, or a socket in a world-writable
directory) is refused with ``DaemonUntrusted`` and never receives a request.

Imports only the standard library, ``aegisd.accounts`` (the daemon account's name, one
definition) and ``aegisd.errors``, so ``import aegisd.client`` stays light
(``aegisd.runtime_dir`` is imported only when no socket is given). It must not speak the
protocol.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Final

from aegisd.accounts import daemon_account, daemon_uid, system_layout
from aegisd.errors import DaemonUntrusted

__all__ = [
    "check_server",
    "discover_socket",
    "runtime_socket",
    "server_uid",
    "system_socket",
]

# macOS xnu: SOL_LOCAL=0, LOCAL_PEERCRED=1, struct xucred = version, uid, ngroups, groups[16]
_SOL_LOCAL: Final = 0
_LOCAL_PEERCRED: Final = 1
_XUCRED: Final = struct.Struct("IIh16I")


def system_socket() -> Path:
    """Separated mode's socket: ``/run/aegis/aegisd.sock`` (``/var/run/aegis`` on macOS)."""
    return system_layout().socket


def runtime_socket() -> Path:
    """Same-uid mode's socket: ``runtime_dir.user_runtime_dir()/aegisd.sock``."""
    from aegisd.runtime_dir import user_runtime_dir  # only needed when no socket is given

    return user_runtime_dir() / "aegisd.sock"


def discover_socket(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``AEGIS_SOCKET``, else the runtime-dir socket if it exists, else the
    system socket if it exists, else the runtime-dir path (so the error names it)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AEGIS_SOCKET")
    if env:
        return Path(env).expanduser()
    personal = runtime_socket()
    if os.path.lexists(personal):
        return personal
    system = system_socket()
    if os.path.lexists(system):
        return system
    return personal


def server_uid(sock: socket.socket) -> int:
    """The uid of the process that listens on the other end of a connected AF_UNIX socket."""
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED.size)
        return int(_XUCRED.unpack_from(raw)[1])
    _pid, uid, _gid = struct.unpack(
        "iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    )
    return int(uid)


def check_server(sock: socket.socket, path: str | os.PathLike[str]) -> int:
    """Refuse (``DaemonUntrusted``) a server that is not aegisd's; returns its uid.

    Call right after ``connect`` and before sending anything.
    """
    uid = server_uid(sock)
    own = os.geteuid()
    account = daemon_uid()
    if uid != own and uid != account:
        raise DaemonUntrusted(
            f"{path}: the process listening there runs as uid {uid}, which is neither yours "
            f"({own}) nor aegisd's account {daemon_account()!r}"
            + (f" ({account})" if account is not None else " (no such account here)")
            + "; refusing to talk to it (someone may have planted this socket)"
        )
    directory = Path(os.path.abspath(os.fspath(path))).parent
    try:
        st = os.stat(directory)
    except OSError as exc:
        msg = f"{directory}: cannot check the socket directory ({exc.strerror})"
        raise DaemonUntrusted(msg) from None
    if st.st_uid not in (uid, 0):
        raise DaemonUntrusted(
            f"{directory}: the socket directory belongs to uid {st.st_uid}, not to the daemon "
            f"({uid}) or root; refusing it"
        )
    if st.st_mode & 0o022:
        raise DaemonUntrusted(
            f"{directory}: the socket directory is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}), so anyone could have replaced the socket; "
            "refusing it (use a private directory for [daemon] socket)"
        )
    return uid

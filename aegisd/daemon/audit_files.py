"""Opening the audit log safely: what another account (or a symlink) could have prepared.

Owns the checks made before aegisd appends to a log: the directory's owner and mode, the
file opened with ``O_NOFOLLOW``, and its type, owner and mode from ``fstat`` of the open
descriptor (so a swap between check and use changes nothing). It must not read, write or
verify records (``aegisd.daemon.audit``), and must not repair what it refuses (no chmod, no chown):
a log someone else could have written is evidence, and the operator decides.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from aegisd.errors import ConfigError

__all__ = ["open_log_fd"]


def open_log_fd(path: Path) -> int:
    """Open the log for append, refusing what another account could have prepared.

    The directory must be this uid's (or root's) and writable by nobody else, since whoever
    may write it can swap the log; the file is opened with ``O_NOFOLLOW`` (a symlink is
    refused, not followed) and, once open, ``fstat`` must show a regular file of this uid
    that nobody else may write. The directory is created 0700 when missing.

    Raises:
        ConfigError: the directory or the file is unsafe, or cannot be opened.
    """
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.geteuid()
    try:
        dst = os.stat(parent)
    except OSError as exc:
        raise ConfigError(f"{parent}: cannot use the audit directory ({exc.strerror})") from None
    if dst.st_uid not in (me, 0) or (dst.st_mode & 0o022 and not dst.st_mode & stat.S_ISVTX):
        raise ConfigError(
            f"{parent}: refusing the audit directory: owned by uid {dst.st_uid} with mode "
            f"{stat.S_IMODE(dst.st_mode):04o}; it must be yours and writable only by you. "
            "Set [daemon] audit_log to a path in a directory of your own"
        )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path}: the audit log is a symlink; refusing to follow it. Remove the link "
                "(aegisd creates the log itself)"
            ) from None
        raise ConfigError(f"{path}: cannot open the audit log ({exc.strerror})") from None
    st = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(st.st_mode):
        problem = "it is not a regular file"
    elif st.st_uid != me:
        problem = f"it is owned by uid {st.st_uid}, not {me}"
    elif st.st_mode & 0o022:
        problem = (
            f"its mode is {stat.S_IMODE(st.st_mode):04o}: others may write it; "
            f"fix with `chmod 600 {path}` after checking its content with `aegisctl audit verify`"
        )
    if problem:
        os.close(fd)
        raise ConfigError(f"{path}: refusing the audit log: {problem}")
    return fd

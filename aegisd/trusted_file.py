"""Files aegisd trusts as input (its config, its policy file): who could have changed them.

Owns the rule, modelled on ssh's ``StrictModes`` for ``authorized_keys`` (issue 13.9): a file
the daemon takes its policy from must be a regular file, not a symlink, owned by the daemon's
uid or root, writable by nobody else (no group or other write bit), and every directory above
it (after resolving the directory's own symlinks) must be owned by the daemon's uid or root
and not writable by others, so that nobody else can replace the file. A sticky directory
(``/tmp``) is accepted when the entry below it belongs to a trusted owner: others can create
files there but cannot rename or remove ours. Reading is one ``open`` with ``O_NOFOLLOW``,
then ``fstat`` on that descriptor and a check that the checked directory holds that very
inode, so nothing can be swapped between the check and the read.

Refusals are ``UnsafeFile`` (a ``ConfigError``) with a fix that works (``chmod go-w FILE``,
``sudo chown ACCOUNT FILE``). Blocking I/O (run it in a worker thread from trio code). It must
not decide what the file means, create or change files, or hold state.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Collection
from pathlib import Path
from shlex import quote
from typing import Final

from aegisd.errors import ConfigError, UnsafeFile

__all__ = ["MAX_TRUSTED_BYTES", "default_owners", "read_trusted"]

MAX_TRUSTED_BYTES: Final = 4 * 1024 * 1024  # a config is kilobytes; refuse a runaway file
_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def default_owners() -> frozenset[int]:
    """Who may own a trusted file: this process's effective uid and root."""
    return frozenset({os.geteuid(), 0})


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _who(uid: int) -> str:
    name = _name(uid)
    return name if name.startswith("uid ") else f"{name} (uid {uid})"


def _owner_text(owners: Collection[int]) -> str:
    names = [_name(u) for u in sorted(owners, reverse=True)]
    return " or ".join(names)


def _me() -> str:
    return _name(os.geteuid()).removeprefix("uid ")


def _check_inode(path: Path, st: os.stat_result, owners: Collection[int], what: str) -> None:
    """The checks on the file itself (``st`` from ``fstat`` of the opened descriptor)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(
            f"{path}: the {what} is not a regular file; refusing it",
            fix=f"replace {path} with a regular file",
        )
    if st.st_uid not in owners:
        raise UnsafeFile(
            f"{path}: the {what} is owned by {_who(st.st_uid)}, not by {_owner_text(owners)}: "
            "that account could change what aegisd trusts; refusing it",
            fix=f"sudo chown {_me()} {quote(str(path))}",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        who = (
            "group- and world" if mode & 0o022 == 0o022 else ("world" if mode & 0o002 else "group")
        )
        raise UnsafeFile(
            f"{path}: the {what} is {who}-writable (mode {mode:04o}): other accounts could "
            "change what aegisd trusts; refusing it",
            fix=f"chmod go-w {quote(str(path))}",
        )


def _check_directories(path: Path, file_uid: int, owners: Collection[int], what: str) -> Path:
    """Every directory above ``path``; returns the file's path with its directory resolved."""
    owners = {*owners, 0}  # root owns / and /etc; a directory of root's is never a risk
    real_dir = Path(os.path.realpath(path.parent))
    below_owner = file_uid  # owner of the entry checked just before (the child)
    current = real_dir
    while True:
        try:
            st = os.stat(current)
        except OSError as exc:
            raise UnsafeFile(
                f"{current}: cannot check a directory above the {what} {path} ({exc.strerror})",
                fix=f"make {current} searchable by {_me()}",
            ) from None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in owners:
            raise UnsafeFile(
                f"{current}: a directory above the {what} {path} is owned by "
                f"{_who(st.st_uid)}: that account could replace the file; refusing it",
                fix=f"keep the {what} in a directory only {_owner_text(owners)} can change "
                f"(not under {current})",
            )
        sticky_ok = bool(st.st_mode & stat.S_ISVTX) and below_owner in owners
        if mode & 0o022 and not sticky_ok:
            raise UnsafeFile(
                f"{current}: a directory above the {what} {path} is writable by others "
                f"(mode {mode:04o}): they could replace the file; refusing it",
                fix=f"chmod go-w {quote(str(current))}",
            )
        below_owner = st.st_uid
        if current.parent == current:
            return real_dir / path.name
        current = current.parent


def read_trusted(
    path: str | os.PathLike[str],
    *,
    owners: Collection[int] | None = None,
    what: str = "config",
    max_bytes: int = MAX_TRUSTED_BYTES,
) -> bytes:
    """The bytes of ``path`` after checking that only ``owners`` could have written them.

    Args:
        path: the file; its last component must not be a symlink.
        owners: the uids that may own it (default: this process's effective uid and root);
            the directories above it may belong to these or to root.
        what: what the file is, for messages ("config", "policy file").
        max_bytes: refuse a larger file.

    Returns:
        The file's contents.

    Raises:
        FileNotFoundError: there is no such file (the caller decides what that means).
        UnsafeFile: a symlink, not a regular file, a foreign owner, group- or world-writable,
            or in a directory others could change.
        ConfigError: the file is larger than ``max_bytes``.
        OSError: the file cannot be read for another reason (permissions, I/O).
    """
    p = Path(path)
    trusted = default_owners() if owners is None else frozenset(owners)
    try:
        fd = os.open(p, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(
                f"{p}: the {what} is a symlink; aegisd does not follow one here (whoever "
                "can change the link or its target could change what aegisd trusts)",
                fix=f'cp --remove-destination "$(realpath {quote(str(p))})" {quote(str(p))}, or '
                "point --config at the real file",
            ) from None
        raise
    try:
        st = os.fstat(fd)
        _check_inode(p, st, trusted, what)
        checked = _check_directories(p, st.st_uid, trusted, what)
        try:
            there = os.lstat(checked)
        except OSError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafeFile(
                f"{p}: the {what} changed while it was being checked; refusing it",
                fix="find out what replaces it, then start aegisd again",
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > max_bytes:
                raise ConfigError(f"{p}: the {what} is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)

"""The per-user runtime directory that holds the default socket, chosen without warnings.

platformdirs emits a ``RuntimeDirWarning`` on *every* call when ``XDG_RUNTIME_DIR`` is unset
(cron, ``su``, containers), which reached every aegisctl command. This module makes the same
choice quietly and says why it fell back (``fallback_reason``), so ``aegisctl doctor`` can
report it once. Standard library only: the SDK imports it. It never creates directories
(the daemon does, with its own checks).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

__all__ = ["fallback_reason", "user_runtime_dir"]


def _private_dir_problem(path: str) -> str | None:
    try:
        st = os.lstat(path)
    except OSError:
        return "does not exist"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.getuid():
        return "is owned by another user"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):o}, not 700"
    return None


def _choose() -> tuple[Path, str | None]:
    if sys.platform == "darwin":  # pragma: no cover - macOS: platformdirs never warns there
        import platformdirs

        return Path(platformdirs.user_runtime_dir("aegis")), None
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        problem = _private_dir_problem(xdg)
        if problem is None:
            return Path(xdg) / "aegis", None
        reason = f"XDG_RUNTIME_DIR={xdg} {problem}"
    elif xdg:
        reason = f"XDG_RUNTIME_DIR={xdg} is not an absolute path"
    else:
        reason = "XDG_RUNTIME_DIR is not set"
    system = f"/run/user/{os.getuid()}"
    if _private_dir_problem(system) is None:
        return Path(system) / "aegis", reason
    return Path(tempfile.gettempdir()) / f"aegis-{os.getuid()}", reason


def user_runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/aegis`` when that is a private directory of ours, else
    ``/run/user/UID/aegis`` when that is, else ``$TMPDIR/aegis-UID`` (macOS: platformdirs)."""
    return _choose()[0]


def fallback_reason() -> str | None:
    """Why ``user_runtime_dir`` did not use ``XDG_RUNTIME_DIR``, or None when it did."""
    return _choose()[1]

"""Process hardening at start: no memory access to the daemon for other processes of its uid.

Owns the one call each platform offers for this, made by ``aegisd`` before it reads a secret:

- Linux: ``prctl(PR_SET_DUMPABLE, 0)``, as ssh-agent does. Non-root processes of the same uid
  can then neither ``ptrace`` the daemon nor read its ``/proc/<pid>/mem`` or ``environ`` (the
  kernel's ptrace access check fails without ``CAP_SYS_PTRACE``), and no core file is written.
  The daemon's own ``/proc/<pid>`` entries become root-owned; the process itself can still
  read ``/proc/self`` (same thread group), so nothing in aegisd depends on it.
- macOS: ``ptrace(PT_DENY_ATTACH)``: debuggers (and ``task_for_pid`` users going through
  ptrace) are refused. It does not stop root, which is outside the threat model either way.

Root (or a process with ``CAP_SYS_PTRACE``) is not stopped on either platform. This module
must not be called by libraries or tests that run the daemon in-process: it changes the
whole process, so only ``aegisd.daemon.main`` calls ``deny_memory_access``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
from typing import Final, Literal

__all__ = ["Plan", "deny_memory_access", "memory_access_state", "plan_for"]

log = logging.getLogger(__name__)

PR_GET_DUMPABLE: Final = 3
PR_SET_DUMPABLE: Final = 4
PT_DENY_ATTACH: Final = 31  # xnu bsd/sys/ptrace.h

Plan = Literal["prctl", "pt_deny_attach", "none"]


def plan_for(platform: str) -> Plan:
    """Which call hardens a process on ``platform`` (``sys.platform`` values)."""
    if platform.startswith("linux"):
        return "prctl"
    if platform == "darwin":
        return "pt_deny_attach"
    return "none"


@functools.cache
def _libc() -> ctypes.CDLL:
    # Linux: the running program's own symbols include libc (no find_library, which forks)
    name = ctypes.util.find_library("c") if sys.platform == "darwin" else None
    return ctypes.CDLL(name, use_errno=True)


def deny_memory_access(platform: str = sys.platform) -> str:
    """Apply the platform's hardening; returns what holds now (for the log and ``status``).

    A failure is logged, not raised: the daemon still serves, and ``status`` says so.
    """
    plan = plan_for(platform)
    if plan == "prctl":
        libc = _libc()
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            log.error("prctl(PR_SET_DUMPABLE, 0) failed (errno %d): same-uid ptrace possible", err)
    elif plan == "pt_deny_attach":  # pragma: no cover - macOS only
        libc = _libc()
        if libc.ptrace(PT_DENY_ATTACH, 0, None, 0) != 0:
            log.error("ptrace(PT_DENY_ATTACH) failed (errno %d)", ctypes.get_errno())
    return memory_access_state(platform)


def memory_access_state(platform: str = sys.platform) -> str:
    """What ``status`` reports: whether other processes of this uid can read our memory."""
    plan = plan_for(platform)
    if plan == "prctl":
        dumpable = _libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
        if dumpable == 0:
            return "not dumpable (PR_SET_DUMPABLE 0)"
        return "dumpable: same-uid processes can ptrace aegisd"
    if plan == "pt_deny_attach":  # pragma: no cover - macOS only
        return "PT_DENY_ATTACH"
    return "no hardening on this platform"

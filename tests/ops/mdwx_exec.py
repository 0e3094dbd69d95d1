"""Run a command under the seccomp rule of systemd's ``MemoryDenyWriteExecute=yes``.

Not a test module. ``python mdwx_exec.py PROGRAM ARGS...`` sets no_new_privs (as the unit's
NoNewPrivileges=yes does), installs a filter that refuses with EPERM what systemd 252's
``seccomp_memory_deny_write_execute()`` refuses on x86-64, then execs the program; the filter
survives exec. Refused:

- ``mmap`` with both PROT_WRITE and PROT_EXEC;
- ``mprotect``/``pkey_mprotect`` adding PROT_EXEC;
- ``shmat`` with SHM_EXEC.

This lets a test run the real daemon stack with the directive in force on a machine where no
systemd user manager is running (containers, CI).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
NR_MMAP, NR_MPROTECT, NR_SHMAT, NR_PKEY_MPROTECT = 9, 10, 30, 329
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
ARG2 = 16 + 2 * 8  # offsetof(struct seccomp_data, args[2]), low 32 bits on little-endian

LD_ABS, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06
ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


# Jumps are relative: the target of instruction i is i + 1 + offset.
PROGRAM = [
    _op(LD_ABS, 4),  # 0  arch
    _op(JEQ, AUDIT_ARCH_X86_64, 1, 0),  # 1
    _op(RET, ALLOW),  # 2  another ABI: out of scope
    _op(LD_ABS, 0),  # 3  syscall number
    _op(JEQ, NR_MMAP, 4, 0),  # 4  -> 9
    _op(JEQ, NR_MPROTECT, 6, 0),  # 5  -> 12
    _op(JEQ, NR_PKEY_MPROTECT, 5, 0),  # 6  -> 12
    _op(JEQ, NR_SHMAT, 7, 0),  # 7  -> 15
    _op(RET, ALLOW),  # 8
    _op(LD_ABS, ARG2),  # 9  mmap prot
    _op(AND, PROT_WRITE | PROT_EXEC),  # 10
    _op(JEQ, PROT_WRITE | PROT_EXEC, 6, 5),  # 11 -> 18 deny / 17 allow
    _op(LD_ABS, ARG2),  # 12 mprotect prot
    _op(AND, PROT_EXEC),  # 13
    _op(JEQ, PROT_EXEC, 3, 2),  # 14 -> 18 deny / 17 allow
    _op(LD_ABS, ARG2),  # 15 shmat flags
    _op(JSET, SHM_EXEC, 1, 0),  # 16 -> 18 deny / 17 allow
    _op(RET, ALLOW),  # 17
    _op(RET, DENY),  # 18
]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        raise SystemExit("mdwx_exec: x86-64 Linux only")
    code = ctypes.create_string_buffer(b"".join(PROGRAM))
    prog = _SockFprog(len(PROGRAM), ctypes.cast(code, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    install()
    os.execv(sys.argv[1], sys.argv[1:])

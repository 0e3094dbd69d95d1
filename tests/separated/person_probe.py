"""Run as the throwaway person: what a prompt-injected agent would try against aegisd.

``python person_probe.py PID PATHS_JSON`` prints one result per attempt: ``"ok"`` or the
errno name (``EACCES``, ``EPERM``). PATHS_JSON: ``{"read": [...], "write": [...],
"create": [...], "state": DIR}``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
from collections.abc import Callable

PTRACE_ATTACH = 16


def main(pid: int, paths: dict[str, list[str] | str]) -> None:
    out: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        else:
            out[name] = "ok"

    def read(p: str) -> bytes:
        with open(p, "rb") as f:
            return f.read(1)

    for p in paths["read"]:
        attempt(f"read {p}", lambda p=p: read(p))
    for p in paths["write"]:
        attempt(f"write {p}", lambda p=p: os.close(os.open(p, os.O_WRONLY | os.O_APPEND)))
    for p in paths["create"]:
        attempt(f"create {p}", lambda p=p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)))
    state = paths["state"]
    assert isinstance(state, str)
    attempt("list state", lambda: os.listdir(state))
    attempt("kill -0", lambda: os.kill(pid, 0))
    attempt("kill -HUP", lambda: os.kill(pid, signal.SIGHUP))
    attempt("environ", lambda: read(f"/proc/{pid}/environ"))
    attempt("mem", lambda: read(f"/proc/{pid}/mem"))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        out["ptrace"] = "ok"
    else:
        out["ptrace"] = errno.errorcode.get(ctypes.get_errno(), "?")
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))

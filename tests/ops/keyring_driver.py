"""Runs inside a throwaway D-Bus session (or none) and drives aegisctl against the keyring.

Not a test module: ``conftest.SecretServiceSession`` starts it as a subprocess so that the
keyring's process-wide state (its chosen backend, D-Bus connections) never touches the pytest
process. It reads a JSON list of steps from argv[1] and writes one JSON result per step to
argv[2]. Step kinds:

- ``{"cli": [args], "input": str | None}``: CliRunner on ``aegisctl.main.cli``, with
  ``AegisError`` rendered as ``aegisctl`` would (exit code and message).
- ``{"pty": [args], "answers": [[prompt, reply], ...]}``: the real ``aegisctl`` on a terminal.
- ``{"keyring_get": [service, name]}``: what the keyring itself returns.
- ``{"scan": [dir, value]}``: files under dir whose bytes contain value.
- ``{"probe": "wx"}``: whether W+X memory, a ctypes callback and RS256 signing work here.
"""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path


def cli_step(args: list[str], stdin: str | None) -> dict[str, object]:
    from aegisctl.main import cli
    from click.testing import CliRunner

    from aegisd.errors import AegisError

    started = time.monotonic()
    result = CliRunner().invoke(cli, args, input=stdin)
    elapsed = time.monotonic() - started
    exc = result.exception
    out: dict[str, object] = {
        "exit": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "elapsed": elapsed,
        "error": None,
    }
    if isinstance(exc, AegisError):
        out["exit"] = exc.exit_code
        out["error"] = f"{exc.message} [{exc.code}]"
    elif exc is not None and not isinstance(exc, SystemExit):
        out["error"] = f"unexpected {type(exc).__name__}"
    return out


def pty_step(args: list[str], answers: list[list[str]]) -> dict[str, object]:
    exe = str(Path(sys.executable).parent / "aegisctl")
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal, as in a real shell
        os.execv(exe, [exe, *args])
    transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
        if pending and pending[0][0].encode() in transcript.rsplit(b"\n", 1)[-1]:
            _, reply = pending.pop(0)
            # Mark what we already answered so the same prompt text later matches anew.
            transcript += b"\n"
            time.sleep(0.05)  # let getpass switch echo off before we type
            os.write(fd, reply.encode() + b"\r")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "transcript": transcript.decode("utf-8", "replace"),
        "unanswered": [p for p, _ in pending],
    }


def keyring_get(service: str, name: str) -> dict[str, object]:
    import keyring

    return {"value": keyring.get_password(service, name), "backend": str(keyring.get_keyring())}


def scan(root: str, value: str) -> dict[str, object]:
    needle = value.encode()
    hits = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return {"hits": hits}


def probe_wx() -> dict[str, object]:
    import ctypes
    import mmap

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    out: dict[str, object] = {}
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        out["wx_mapping"] = "allowed"
    except PermissionError:
        out["wx_mapping"] = "denied"
    libc = ctypes.CDLL(None)
    cmp_type = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)
    )
    numbers = (ctypes.c_int * 4)(3, 1, 4, 2)
    try:
        libc.qsort(numbers, 4, ctypes.sizeof(ctypes.c_int), cmp_type(lambda a, b: a[0] - b[0]))
        out["ctypes_callback"] = list(numbers)
    except Exception as exc:
        out["ctypes_callback"] = type(exc).__name__
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "x"}, key, algorithm="RS256")
    out["rs256"] = jwt.decode(token, key.public_key(), algorithms=["RS256"])
    return out


def main() -> None:
    steps = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for step in steps:
        if "cli" in step:
            results.append(cli_step(step["cli"], step.get("input")))
        elif "pty" in step:
            results.append(pty_step(step["pty"], step["answers"]))
        elif "keyring_get" in step:
            results.append(keyring_get(*step["keyring_get"]))
        elif "probe" in step:
            results.append(probe_wx())
        elif "scan" in step:
            results.append(scan(*step["scan"]))
        else:
            raise SystemExit(f"unknown step {step!r}")
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()

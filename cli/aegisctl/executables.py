"""What caller rules will see on this machine: resolved interpreters and exe patterns.

The most likely first failure is a ``[[callers]]`` rule whose ``exe`` names an interpreter
this machine does not have (the examples use ``/usr/bin/python3*``; pyenv, Homebrew and some
venvs put Python elsewhere). This module says what the current interpreter and ``aegis-mcp``
resolve to (the daemon matches the *resolved* executable of the connecting process) and which
exe patterns match no file here, and whether this machine's ``aegis-mcp`` would match any
rule at all, for ``policy check`` and ``doctor``. It reads the file system
only; it never changes anything.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

from aegisctl.outputs import ResolvedExecutables
from aegisd.config import Config
from aegisd.daemon.peer import PeerIdentity, explain_no_match, match_caller

__all__ = ["exe_pattern_warnings", "resolved_executables"]


def _shebang_interpreter(script: Path) -> str | None:
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    if not parts:
        return None
    if os.path.basename(parts[0]) == "env" and len(parts) > 1:
        found = shutil.which(parts[1])
        return os.path.realpath(found) if found else None
    return os.path.realpath(parts[0])


def resolved_executables() -> ResolvedExecutables:
    """This interpreter, and the ``aegis-mcp`` beside it (else on PATH) with its interpreter."""
    beside = Path(sys.executable).parent / "aegis-mcp"
    found = str(beside) if beside.exists() else shutil.which("aegis-mcp")
    return ResolvedExecutables(
        interpreter=os.path.realpath(sys.executable),
        aegis_mcp=found,
        aegis_mcp_interpreter=_shebang_interpreter(Path(found)) if found else None,
    )


def _matches_something(pattern: str) -> bool:
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        return any(os.path.isfile(p) for p in glob.glob(expanded))
    return os.path.isfile(expanded)


def exe_pattern_warnings(cfg: Config, resolved: ResolvedExecutables) -> list[str]:
    """One sentence per caller-rule ``exe`` pattern that matches no file on this machine."""
    runs = resolved.aegis_mcp_interpreter or resolved.interpreter
    warnings: list[str] = []
    for i, rule in enumerate(cfg.callers):
        for pattern in rule.exe:
            if not _matches_something(pattern):
                warnings.append(
                    f'callers[{i}] ("{rule.name}"): exe "{pattern}" matches no file on this '
                    f"machine, so the rule can never match; aegis-mcp here runs {runs}"
                )
    shim = _shim_peer(resolved)
    if cfg.callers and shim is not None and match_caller(shim, cfg.callers, None) is None:
        why = explain_no_match(shim, cfg.callers)
        warnings.append(why.replace("this process", "aegis-mcp as installed here", 1))
    return warnings


def _shim_peer(resolved: ResolvedExecutables) -> PeerIdentity | None:
    """What aegisd would see when this machine's aegis-mcp connects (the interpreter's
    resolved path, and ``python /path/aegis-mcp`` as the command line)."""
    if resolved.aegis_mcp is None or resolved.aegis_mcp_interpreter is None:
        return None
    return PeerIdentity(
        uid=os.getuid(),
        gid=os.getgid(),
        pid=0,
        exe=resolved.aegis_mcp_interpreter,
        argv=(resolved.aegis_mcp_interpreter, resolved.aegis_mcp),
    )

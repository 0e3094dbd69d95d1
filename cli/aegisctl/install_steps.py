"""The steps of an install plan and how they are carried out (or only printed).

Owns the plan's vocabulary (``WriteFile``, ``MakeDir``, ``RemoveFile``, ``RemoveTree``,
``Run``), the ``Runner`` through which commands run (injectable, so tests never touch a real
service manager or account database), atomic file writes that give a file its mode and owner
before it appears, and ``apply``, which with ``dry_run`` prints every step and every file's
content and changes nothing. Which steps a plan holds is decided in ``aegisctl.service``
(per-user) and ``aegisctl.system_install`` (separated mode); this module never decides.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click

__all__ = [
    "COMMAND_TIMEOUT",
    "MakeDir",
    "RemoveFile",
    "RemoveTree",
    "Run",
    "RunResult",
    "Runner",
    "Step",
    "WriteFile",
    "apply",
    "describe",
    "subprocess_runner",
]

COMMAND_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], RunResult]


def subprocess_runner(argv: Sequence[str]) -> RunResult:
    """Run a service-manager command, capturing its output (never a secret in argv)."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError:
        return RunResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return RunResult(124, "", f"{argv[0]}: no answer within {COMMAND_TIMEOUT:g} s")
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int = 0o644
    # Names, resolved when the step runs: a dry run may show accounts that do not exist yet.
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class MakeDir:
    """Create the directory; with an owner or group, also give an existing one mode and owner."""

    path: Path
    mode: int
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class RemoveFile:
    path: Path


@dataclass(frozen=True)
class RemoveTree:
    path: Path


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    # False for commands whose failure only means "there was nothing to undo".
    check: bool = True


Step = WriteFile | MakeDir | RemoveFile | RemoveTree | Run


def _owned(step: WriteFile | MakeDir) -> str:
    if step.owner is None and step.group is None:
        return ""
    return f", {step.owner or '-'}:{step.group or '-'}"


def describe(step: Step, *, done: bool = False) -> str:
    if isinstance(step, WriteFile):
        return f"{'wrote' if done else 'write'} {step.path} (mode {step.mode:04o}{_owned(step)})"
    if isinstance(step, MakeDir):
        verb = "created" if done else "create"
        return f"{verb} directory {step.path} (mode {step.mode:04o}{_owned(step)})"
    if isinstance(step, RemoveFile):
        return f"{'removed' if done else 'remove'} {step.path}"
    if isinstance(step, RemoveTree):
        return f"{'removed' if done else 'remove'} {step.path} and everything in it"
    note = "" if step.check or done else "  (a failure here is ignored)"
    return f"{'ran' if done else 'run'}: {shlex.join(step.argv)}{note}"


def _chown(path: str | Path, owner: str | None, group: str | None) -> None:
    """``chown owner:group`` by name; ``LookupError`` names an account that does not exist."""
    uid = pwd.getpwnam(owner).pw_uid if owner is not None else -1
    gid = grp.getgrnam(group).gr_gid if group is not None else -1
    os.chown(path, uid, gid, follow_symlinks=False)


def _write_atomically(step: WriteFile) -> None:
    path = step.path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(step.content)
            f.flush()
            os.fsync(f.fileno())
        # Mode and owner before the rename: the file never exists under its name with a
        # wider mode or the wrong owner (the config is root:aegis 0640).
        if step.owner is not None or step.group is not None:
            _chown(tmp, step.owner, step.group)
        os.chmod(tmp, step.mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _make_dir(step: MakeDir) -> None:
    step.path.mkdir(mode=step.mode & 0o777, parents=True, exist_ok=True)
    if step.owner is None and step.group is None:
        return
    st = os.lstat(step.path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise click.ClickException(f"{step.path}: exists and is not a directory; remove it")
    _chown(step.path, step.owner, step.group)
    os.chmod(step.path, step.mode)  # after chown, which clears the setgid bit


def _remove_tree(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
    return True


def apply(steps: Sequence[Step], runner: Runner, *, dry_run: bool) -> None:
    """Carry out (or, with ``dry_run``, only print) each step in order.

    Raises:
        click.ClickException: a checked command failed or a file could not be written; the
            steps after it are not run.
    """
    for step in steps:
        if dry_run:
            click.echo(f"would {describe(step)}")
            if isinstance(step, WriteFile):
                for line in step.content.decode().splitlines():
                    click.echo(f"    {line}")
            continue
        try:
            if isinstance(step, MakeDir):
                _make_dir(step)
            elif isinstance(step, WriteFile):
                _write_atomically(step)
            elif isinstance(step, RemoveFile):
                try:
                    step.path.unlink()
                except FileNotFoundError:
                    click.echo(f"(already absent: {step.path})")
                    continue
            elif isinstance(step, RemoveTree) and not _remove_tree(step.path):
                click.echo(f"(already absent: {step.path})")
                continue
        except (OSError, LookupError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise click.ClickException(f"{describe(step)}: {why}") from None
        if isinstance(step, Run):
            result = runner(step.argv)
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip()
                if step.check:
                    raise click.ClickException(
                        f"`{shlex.join(step.argv)}` failed (exit {result.returncode}): {detail}"
                    )
                click.echo(f"ran: {shlex.join(step.argv)} (exit {result.returncode}, ignored)")
                continue
        click.echo(describe(step, done=True))

"""Running aegis as other accounts: throwaway users and a venv another account can execute.

The project venv's interpreter is a pyenv build under /root, which no other account can
execute. ``system_venv`` therefore makes (once, cached under /var/tmp by the content of the
project venv) a venv from ``/usr/bin/python3`` whose site-packages are a copy of the project
venv's runtime packages; the editable install inside it still points at this source tree, so
the code under test is the worktree's. Both interpreters are CPython 3.11, so compiled
wheels are shared as they are.

``throwaway_user`` creates a system user (and its group) with a unique random name, since
other engineers run these tests at the same time, and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.corekit import SYSTEM_PYTHON, DaemonProcess, Files

# dists the daemon never imports: left out of the copy to keep it small
_SKIP = (
    "mypy",
    "ruff",
    "hypothesis",
    "_hypothesis",
    "pip",
    "setuptools",
    "pyinstrument",
    "_pytest",
    "pytest",
)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def prefix(self, *groups: int) -> list[str]:
        """``setpriv`` argv prefix that runs a command as this account (plus ``groups``)."""
        group_opt = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", group_opt]


def need_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and drop privileges (CI runs as root)")
    for tool in ("setpriv", "useradd", "userdel", "groupadd", "groupdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (apt-get install util-linux passwd)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs /usr/bin/python3 (apt-get install python3)")


@contextlib.contextmanager
def throwaway_user(tag: str = "u") -> Iterator[Account]:
    need_root_tools()
    name = f"aeg{tag}{secrets.token_hex(4)}"
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )
    try:
        pw = pwd.getpwnam(name)
        yield Account(name, pw.pw_uid, pw.pw_gid)
    finally:
        subprocess.run(["userdel", name], timeout=30, capture_output=True, check=False)
        subprocess.run(["groupdel", name], timeout=30, capture_output=True, check=False)


@contextlib.contextmanager
def throwaway_group(tag: str = "g") -> Iterator[tuple[str, int]]:
    need_root_tools()
    name = f"aeg{tag}{secrets.token_hex(4)}"
    subprocess.run(["groupadd", "--system", name], check=True, timeout=30, capture_output=True)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], timeout=30, capture_output=True, check=False)


def _site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def system_venv() -> Path:
    """A venv from /usr/bin/python3 that any account can run; returns its python."""
    need_root_tools()
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"/usr/bin/python3 is {version}, the project venv {sys.version_info[:2]}")
    source = _site_packages(Path(sys.prefix))
    names = sorted(p.name for p in source.iterdir() if p.name != "__pycache__")
    key = hashlib.sha256(("\n".join([str(source), *names])).encode()).hexdigest()[:12]
    target = Path(f"/var/tmp/aegis-test-venv-{key}")
    python = target / "bin" / "python"
    if python.exists():
        return python
    build = Path(tempfile.mkdtemp(prefix="aegis-test-venv-build-", dir="/var/tmp"))
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(build)], check=True, timeout=120
    )
    dest = _site_packages(build)
    for entry in source.iterdir():
        if entry.name.startswith(_SKIP) or "mypyc" in entry.name or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, dest / entry.name)
    for dirpath, _dirnames, filenames in os.walk(build):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    (build / "pyvenv.cfg").chmod(0o644)
    try:
        os.rename(build, target)  # atomic: a concurrent build of the same key loses the race
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
    return python


def daemon_argv(python: Path, config: Path) -> list[str]:
    return [
        str(python),
        "-c",
        "from aegisd.daemon.main import main; main()",
        "--config",
        str(config),
    ]


class ForeignDaemon(DaemonProcess):
    """``DaemonProcess`` whose readiness socket another account may write to."""

    def _open_notify(self) -> str:
        path = super()._open_notify()
        os.chmod(path, 0o666)
        return path


@contextlib.contextmanager
def shared_root(owner: Account) -> Iterator[Path]:
    """A short directory under /tmp owned by ``owner`` (others may traverse, not list)."""
    root = Path(tempfile.mkdtemp(prefix="aeg", dir="/tmp"))
    try:
        os.chown(root, owner.uid, owner.gid)
        root.chmod(0o711)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_daemon_as(
    account: Account,
    files: Files,
    python: Path,
    *,
    groups: Sequence[int] = (),
    env: dict[str, str] | None = None,
) -> ForeignDaemon:
    """Run ``aegisd --config`` as ``account``; the config must be readable by it."""
    os.chown(files.config, account.uid, account.gid)
    argv = [*account.prefix(*groups), *daemon_argv(python, files.config)]
    return ForeignDaemon(files, argv=argv, env=env or {})

"""A system-wide installation of this source tree that another account can run.

The project's own venv is a pyenv build under /root, which the ``aegis`` account cannot
execute; separated mode needs what a newcomer would make: a venv from ``/usr/bin/python3`` in
a world-readable place with the project installed non-editable. Built once per content hash
of the sources (``/var/tmp/aegis-sysvenv-<hash>``), under a lock so that concurrent runs wait
for one build, and marked complete only at the end (a half-built venv is rebuilt).

Run as ``python -m tests.separated.sysvenv`` to prebuild it (prints the path).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = Path("/var/tmp")
SYSTEM_PYTHON = Path("/usr/bin/python3")
COMPLETE = ".aegis-complete"
SOURCES = ("pyproject.toml", "README.md", "aegisd", "cli")
# Venvs of other source trees unused this long are removed (about 90 MB each).
KEEP_UNUSED_SECONDS = 3600.0


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SOURCES:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        else:
            out += sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    return out


def source_hash() -> str:
    h = hashlib.sha256()
    for f in _files():
        h.update(str(f.relative_to(ROOT)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _trusted(path: Path) -> bool:
    # /var/tmp is world-writable: only reuse a directory root made and nobody else can change.
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _prune(keep: Path) -> None:
    now = time.time()
    for old in BASE.glob("aegis-sysvenv-*"):
        if old == keep or old.suffix == ".lock" or not _trusted(old):
            continue
        marker = old / COMPLETE
        used = marker.stat().st_mtime if marker.exists() else old.stat().st_mtime
        if now - used > KEEP_UNUSED_SECONDS:
            shutil.rmtree(old, ignore_errors=True)


def system_venv() -> Path:
    """The venv's path, built if needed (a minute or two the first time: pip from PyPI)."""
    if not SYSTEM_PYTHON.exists():
        raise RuntimeError(f"{SYSTEM_PYTHON} not found (apt-get install python3 python3-venv)")
    target = BASE / f"aegis-sysvenv-{source_hash()}"
    with _locked(BASE / "aegis-sysvenv.lock"):
        _prune(keep=target)
        if target.exists() and _trusted(target) and (target / COMPLETE).exists():
            (target / COMPLETE).touch()  # "in use": pruning measures from here
            return target
        if os.path.lexists(target):
            shutil.rmtree(
                target
            ) if target.is_dir() and not target.is_symlink() else target.unlink()
        old = os.umask(0o022)  # world-readable: the aegis account must run it
        try:
            with tempfile.TemporaryDirectory(prefix="aegis-src-", dir=BASE) as src:
                for name in SOURCES:
                    p = ROOT / name
                    if p.is_file():
                        shutil.copy2(p, Path(src) / name)
                    else:
                        shutil.copytree(
                            p, Path(src) / name, ignore=shutil.ignore_patterns("__pycache__")
                        )
                subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(target)], check=True)
                env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
                subprocess.run(
                    [
                        str(target / "bin" / "pip"),
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--no-input",
                        src,
                    ],
                    check=True,
                    env=env,
                    timeout=900,
                )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            os.umask(old)
        os.chmod(target, 0o755)
        (target / COMPLETE).write_text("ok\n")
    return target


if __name__ == "__main__":
    print(system_venv())
    sys.exit(0)

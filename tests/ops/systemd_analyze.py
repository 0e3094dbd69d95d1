"""``systemd-analyze`` as the tests use it: verify (empty stderr required) and the score."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not found (a Linux host with systemd >= 252 is needed)",
)


def _analyze(args: list[str], units: Path, home: Path) -> subprocess.CompletedProcess[str]:
    runtime = home / "xdg-runtime"  # never inside units: they may be the repository copies
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(
        ["systemd-analyze", *args],
        cwd=units,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def write_units(directory: Path, service: str, socket: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "aegisd.service").write_text(service)
    (directory / "aegisd.socket").write_text(socket)
    return directory


def verify(units: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return _analyze(["verify", "--user", "./aegisd.service", "./aegisd.socket"], units, home)


def exposure(units: Path, home: Path) -> float:
    proc = _analyze(["security", "--offline=true", "--user", "./aegisd.service"], units, home)
    match = re.search(r"Overall exposure level for aegisd\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))

"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector`` 2.12.0) against aegis-mcp.

An independent client implementation as a smoke test of the wire format. It needs node and
npm; the package is installed once into ``$AEGIS_INSPECTOR_DIR`` (default
``~/.cache/aegis-tests/inspector-2.12.0``, outside the repository). Without node, npm or the
network to install it, the tests are skipped and say why. The Inspector's HOME is a scratch
directory, so nothing lands in the real home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sdk.harness import AegisdProcess

from .conftest import SHIM

VERSION = "2.12.0"
PACKAGE = "@modelcontextprotocol/inspector"


@pytest.fixture(scope="module")
def inspector_dir() -> Iterator[Path]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    default = Path.home() / ".cache" / "aegis-tests" / f"inspector-{VERSION}"
    directory = Path(os.environ.get("AEGIS_INSPECTOR_DIR", default))
    if not (directory / "node_modules" / ".bin" / "mcp-inspector").exists():
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "package.json").exists():
            (directory / "package.json").write_text('{"private": true}\n')
        try:
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", f"{PACKAGE}@{VERSION}"],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of the Inspector timed out")
        if done.returncode != 0:
            pytest.skip(f"npm install of the Inspector failed: {done.stderr.strip()[-300:]}")
    yield directory


def inspector(directory: Path, home: Path, socket: Path, *args: str) -> tuple[int, Any, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "npm_config_update_notifier": "false",
    }
    done = subprocess.run(
        [
            "npx",
            "--no-install",
            PACKAGE,
            "--cli",
            "-e",
            f"AEGIS_SOCKET={socket}",
            str(SHIM),
            *args,
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    try:
        out = json.loads(done.stdout)
    except ValueError:
        out = None
    return done.returncode, out, done.stderr


def test_inspector_lists_tools(inspector_dir: Path, aegisd: AegisdProcess, tmp_path: Path) -> None:
    rc, out, err = inspector(inspector_dir, tmp_path, aegisd.socket, "--method", "tools/list")
    assert rc == 0, err
    names = {t["name"] for t in out["tools"]}
    assert {"t_read", "t_get", "t_delete"} <= names and "t_token" not in names
    (get,) = [t for t in out["tools"] if t["name"] == "t_get"]
    assert get["inputSchema"]["required"] == ["name"]


def test_inspector_calls_tools(inspector_dir: Path, aegisd: AegisdProcess, tmp_path: Path) -> None:
    rc, out, err = inspector(
        inspector_dir,
        tmp_path,
        aegisd.socket,
        "--method",
        "tools/call",
        "--tool-name",
        "t_get",
        "--tool-arg",
        "name=scratch",
    )
    assert rc == 0, err
    assert out["isError"] is False
    assert out["structuredContent"]["body"] == {"name": "scratch"}

    rc, out, err = inspector(
        inspector_dir,
        tmp_path,
        aegisd.socket,
        "--method",
        "tools/call",
        "--tool-name",
        "t_delete",
        "--tool-arg",
        "repo=inspected",
        "outcome=deny",
    )
    assert rc == 5, err  # the Inspector's exit status for an isError result
    assert out["isError"] is True
    assert out["structuredContent"]["error"]["code"] == "approval_denied"

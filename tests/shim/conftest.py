"""Fixtures for the shim tests: a local API, a scripted aegisd, and how to launch aegis-mcp.

The shim always runs as the installed console script, as a host would launch it, with an
explicit minimal environment (hosts pass only what their config names).
"""

from __future__ import annotations

import os
from pathlib import Path

from mcp import StdioServerParameters

from tests.sdk.conftest import aegisd, upstream  # noqa: F401 - the same session fixtures
from tests.sdk.harness import VENV_BIN

SHIM = VENV_BIN / "aegis-mcp"


def shim_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def shim_params(socket: Path | str, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(SHIM), args=["--socket", str(socket), *extra], env=shim_env()
    )

"""A throwaway HOME, and a D-Bus session with gnome-keyring in it, for keyring tests.

``KeyringSession.run`` starts ``keyring_driver.py`` in a subprocess, under ``dbus-run-session``
with gnome-keyring started (and unlocked, unless asked not to) as in reference/platform.md §8,
or with no session bus at all. The pytest process itself never loads a keyring backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("keyring_driver.py")
SESSION_TIMEOUT = 90.0

# Variables that would point the child at the developer's real keyring, bus or config.
_SCRUB = (
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "PYTHON_KEYRING_BACKEND",
    "AEGIS_CONFIG",
    "AEGIS_SOCKET",
    "GNOME_KEYRING_CONTROL",
    "DISPLAY",
    "WAYLAND_DISPLAY",
)


class KeyringSession:
    """One throwaway HOME; each ``run`` is one D-Bus session with its own gnome-keyring."""

    def __init__(self, root: Path, *, with_bus: bool) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.home.mkdir(parents=True, exist_ok=True)
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config = root / "aegisd.toml"
        self.config.write_text("")
        self.with_bus = with_bus
        self._runs = 0

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("AEGIS_")
        }
        env.update(
            HOME=str(self.home),
            XDG_RUNTIME_DIR=str(self.runtime),
            LANG="C.UTF-8",
            AEGIS_CONFIG=str(self.config),
            # A throwaway password for a throwaway keyring; it never protects anything real.
            AEGIS_TEST_KEYRING_PW="aegis-test-keyring",
        )
        env.update(extra or {})
        return env

    def run(
        self,
        steps: Sequence[Mapping[str, Any]],
        *,
        unlock: bool = True,
        env: Mapping[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Run the steps; ``wrap`` is a command prefix for the driver (e.g. a seccomp shim)."""
        self._runs += 1
        steps_file = self.root / f"steps-{self._runs}.json"
        out_file = self.root / f"results-{self._runs}.json"
        steps_file.write_text(json.dumps(list(steps)))
        python = [*wrap, sys.executable, str(DRIVER), str(steps_file), str(out_file)]
        if self.with_bus:
            start = (
                'printf %s "$AEGIS_TEST_KEYRING_PW" | '
                "gnome-keyring-daemon --unlock --components=secrets >/dev/null"
                if unlock
                else "gnome-keyring-daemon --start --components=secrets >/dev/null"
            )
            argv = ["dbus-run-session", "--", "sh", "-c", f'{start} && exec "$@"', "sh", *python]
        else:
            argv = python
        proc = subprocess.run(
            argv,
            env=self.env(env),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=SESSION_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0 or not out_file.exists():
            raise AssertionError(
                f"keyring session failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        results: list[dict[str, Any]] = json.loads(out_file.read_text())
        return results

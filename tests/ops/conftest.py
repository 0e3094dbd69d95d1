"""Fixtures for the operations tests: a real Secret Service in a throwaway D-Bus session.

Without dbus-run-session or gnome-keyring-daemon the Secret Service tests are skipped, saying
which package to install.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .keyring_session import KeyringSession


def _missing_secret_service() -> str | None:
    for tool, package in (("dbus-run-session", "dbus"), ("gnome-keyring-daemon", "gnome-keyring")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {package}); needs a real Secret Service"
    return None


@pytest.fixture
def secret_service(tmp_path: Path) -> KeyringSession:
    """A throwaway HOME whose ``run`` happens inside a D-Bus session with gnome-keyring."""
    reason = _missing_secret_service()
    if reason:
        pytest.skip(reason)
    return KeyringSession(tmp_path, with_bus=True)


@pytest.fixture
def no_bus(tmp_path: Path) -> KeyringSession:
    """A throwaway HOME with no session bus at all (a headless box, a bare service)."""
    return KeyringSession(tmp_path, with_bus=False)

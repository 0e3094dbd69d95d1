"""Fixtures for tests that need other accounts: a runnable venv and throwaway users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crossuid.foreign import Account, ForeignDaemon, system_venv, throwaway_user


@pytest.fixture(scope="session")
def venv_python() -> Path:
    return system_venv()


@pytest.fixture
def daemon_user() -> Iterator[Account]:
    with throwaway_user("d") as account:
        yield account


@pytest.fixture
def person() -> Iterator[Account]:
    with throwaway_user("p") as account:
        yield account


@pytest.fixture
def foreign_daemons() -> Iterator[list[ForeignDaemon]]:
    started: list[ForeignDaemon] = []
    yield started
    for d in started:
        d.cleanup()

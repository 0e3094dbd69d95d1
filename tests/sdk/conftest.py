"""Fixtures for the SDK tests: one scripted aegisd and one local API for the whole session.

The asyncio tests are marked ``anyio``; pytest-trio's ``trio_mode`` would claim them too, so
the hook below takes the trio marker off any test that carries the anyio marker (both plugins
then coexist in one run). The fixtures are synchronous so both kinds of test can use them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import AegisdProcess, Upstream, cleanup, start_aegisd


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="session")
def aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream)
    yield process
    cleanup(process)

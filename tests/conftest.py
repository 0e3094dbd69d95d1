"""Shared fixtures: short private directories, daemon configs, the daemon in and out of process.

- ``aeg_root``: a 0700 directory with a short path under /tmp (AF_UNIX paths must stay under
  108 bytes; pytest's ``tmp_path`` can be longer), removed after the test.
- ``write_config``: ``write_config(root=None, **overrides) -> Files``; keyword arguments go to
  ``[daemon]`` (``max_connections=2``), plus ``callers=``, ``actions=``, ``extra=`` (raw TOML).
- ``spawn_daemon``: ``spawn_daemon(files, start=True, env=…, argv=…) -> DaemonProcess``; every
  process it started is stopped (SIGTERM, then SIGKILL) when the test ends, pass or fail.
- ``daemon_proc``: a subprocess daemon on the default config, already READY.
- ``daemon``: an in-process ``Daemon`` started with ``nursery.start(daemon.serve)``.

Helpers with no fixture state (the raw wire client, config writer, audit readers) live in
``corekit.py`` so test modules can import them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from aegisd.config import load_config
from aegisd.daemon.daemon import Daemon
from tests.corekit import DaemonProcess, Files, short_root
from tests.corekit import write_config as _write_config


@pytest.fixture
def aeg_root() -> Iterator[Path]:
    with short_root() as root:
        yield root


@pytest.fixture
def write_config(aeg_root: Path) -> Callable[..., Files]:
    def write(root: Path | None = None, **overrides: object) -> Files:
        return _write_config(root or aeg_root, **overrides)  # type: ignore[arg-type]

    return write


@pytest.fixture
def spawn_daemon() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def spawn(
        files: Files,
        *,
        start: bool = True,
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
    ) -> DaemonProcess:
        d = DaemonProcess(files, argv=argv, env=dict(env or {}))
        started.append(d)
        return d.start() if start else d.launch()

    yield spawn
    for d in started:
        d.cleanup()


@pytest.fixture
def daemon_proc(
    write_config: Callable[..., Files], spawn_daemon: Callable[..., DaemonProcess]
) -> DaemonProcess:
    return spawn_daemon(write_config())


@pytest.fixture
async def daemon(write_config: Callable[..., Files], nursery: trio.Nursery) -> Daemon:
    d = Daemon(load_config(write_config().config))
    await nursery.start(d.serve)
    return d

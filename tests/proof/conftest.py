"""Fixtures of the proof suites: the in-process stack of the broker tests (dev tenant over real
HTTP, ``Daemon`` on a real socket), reused by ``test_faults.py``."""

from tests.broker.conftest import make_stack

__all__ = ["make_stack"]

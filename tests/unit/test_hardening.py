"""Which hardening call each platform gets (the call itself is tested with real processes in
tests/crossuid/test_memory.py)."""

from __future__ import annotations

import pytest

from aegisd.daemon.hardening import memory_access_state, plan_for


@pytest.mark.parametrize(
    ("platform", "plan"),
    [("linux", "prctl"), ("darwin", "pt_deny_attach"), ("win32", "none"), ("freebsd14", "none")],
)
def test_plan_per_platform(platform: str, plan: str) -> None:
    assert plan_for(platform) == plan


def test_in_process_daemons_do_not_harden_the_test_runner() -> None:
    # only aegisd.daemon.main calls deny_memory_access: the Daemon class must not change its process
    assert memory_access_state().startswith("dumpable")
    assert memory_access_state("win32") == "no hardening on this platform"

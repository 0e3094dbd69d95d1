"""``aegisd.accounts``: the daemon account's name (with the test override) and the layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegisd.accounts import DAEMON_USER_ENV, daemon_account, daemon_uid, system_layout


def test_the_account_is_aegis_on_linux_and_underscored_on_macos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DAEMON_USER_ENV, raising=False)
    assert daemon_account("linux") == "aegis"
    assert daemon_account("macos") == "_aegis"
    monkeypatch.setenv(DAEMON_USER_ENV, "root")
    assert daemon_account("linux") == daemon_account("macos") == "root"
    assert daemon_uid() == 0
    monkeypatch.setenv(DAEMON_USER_ENV, "no-such-account-aegis")
    assert daemon_uid() is None


def test_layouts() -> None:
    linux, mac = system_layout("linux"), system_layout("macos")
    assert (linux.config, linux.socket, linux.secrets_dir, linux.audit_log) == (
        Path("/etc/aegis/aegisd.toml"),
        Path("/run/aegis/aegisd.sock"),
        Path("/var/lib/aegis/secrets"),
        Path("/var/lib/aegis/audit.jsonl"),
    )
    assert mac.socket == Path("/var/run/aegis/aegisd.sock")
    assert mac.secrets_dir == Path("/var/db/aegis/secrets")

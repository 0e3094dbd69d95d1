"""Separated mode's fixed names: the daemon's account, the clients' group and the system paths.

Owns the single definition of who the system daemon runs as (``aegis`` on Linux, ``_aegis``
on macOS, overridable with ``AEGIS_DAEMON_USER`` for tests) and where a system install keeps
its config, state, secrets and socket. Clients use ``daemon_account()`` to recognise the
daemon's uid behind ``/run/aegis/aegisd.sock``; ``aegisctl service install --system`` uses the
layout to create it. Pure lookups: no file is created or changed here, and nothing but the
environment and the account database is read.
"""

from __future__ import annotations

import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "CLIENTS_GROUP",
    "DAEMON_ACCOUNT",
    "DAEMON_ACCOUNT_MACOS",
    "DAEMON_USER_ENV",
    "SystemLayout",
    "daemon_account",
    "daemon_uid",
    "system_layout",
]

DAEMON_ACCOUNT: Final = "aegis"
# macOS reserves the leading underscore for daemon accounts (_www, _postgres, ...).
DAEMON_ACCOUNT_MACOS: Final = "_aegis"
# Tests that cannot create the real account point clients at another one.
DAEMON_USER_ENV: Final = "AEGIS_DAEMON_USER"
# Membership lets a process *connect*; the daemon still checks every peer's uid itself.
CLIENTS_GROUP: Final = "aegis-clients"

Platform = Literal["linux", "macos"]


def _host() -> Platform:
    return "macos" if sys.platform == "darwin" else "linux"


def daemon_account(platform: Platform | None = None) -> str:
    """The system daemon's account name: ``$AEGIS_DAEMON_USER``, else the platform's."""
    override = os.environ.get(DAEMON_USER_ENV)
    if override:
        return override
    return DAEMON_ACCOUNT_MACOS if (platform or _host()) == "macos" else DAEMON_ACCOUNT


def daemon_uid() -> int | None:
    """The uid of ``daemon_account()`` on this machine, or ``None`` when it does not exist."""
    try:
        return pwd.getpwnam(daemon_account()).pw_uid
    except KeyError:
        return None


@dataclass(frozen=True)
class SystemLayout:
    """Where a separated-mode install puts things (docs/OPERATIONS.md has the table)."""

    platform: Platform
    config_dir: Path
    state_dir: Path
    runtime_dir: Path

    @property
    def config(self) -> Path:
        return self.config_dir / "aegisd.toml"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "aegisd.sock"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"

    @property
    def account(self) -> str:
        return daemon_account(self.platform)


def system_layout(platform: Platform | None = None) -> SystemLayout:
    """The layout for ``platform`` (default: this machine)."""
    if (platform or _host()) == "macos":
        return SystemLayout(
            platform="macos",
            config_dir=Path("/Library/Application Support/Aegis"),
            state_dir=Path("/var/db/aegis"),
            runtime_dir=Path("/var/run/aegis"),
        )
    return SystemLayout(
        platform="linux",
        config_dir=Path("/etc/aegis"),
        state_dir=Path("/var/lib/aegis"),
        runtime_dir=Path("/run/aegis"),
    )

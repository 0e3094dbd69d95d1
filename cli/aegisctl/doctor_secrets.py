"""``aegisctl doctor``'s secret checks: is every secret the config needs in its store?

Owns which store to open for the check (the daemon account's file store as that account's,
in separated mode) and the fix for each backend (a command that works there). Reads presence
only: it must never read, print or compare a secret's value, and never change the store.
"""

from __future__ import annotations

import os
from pathlib import Path

from aegisctl.doctor_check import Check
from aegisctl.secrets import SYSTEM_SET_HINT
from aegisd.accounts import daemon_uid
from aegisd.config import Config
from aegisd.errors import AegisError
from aegisd.file_store import FileSecretStore, default_secrets_dir
from aegisd.secrets import SecretStore, env_var_name, needed_secrets, open_secret_store

__all__ = ["secrets_checks"]


def _daemon_owned(cfg: Config) -> int | None:
    """The daemon account's uid when the file store is that account's (separated mode)."""
    account = daemon_uid()
    if cfg.secrets.backend != "file" or account is None or account == os.getuid():
        return None
    directory = Path(cfg.secrets.dir or default_secrets_dir()).expanduser()
    try:
        return account if directory.stat().st_uid == account else None
    except OSError:  # missing, or a parent we may not traverse: the daemon's all the same
        return account if cfg.secrets.dir else None


def _secret_fix(cfg: Config, name: str) -> str:
    """A fix that works with this backend (the env backend refuses `secrets set`)."""
    if cfg.secrets.backend == "env":
        return f"set {env_var_name(name)} in aegisd's environment (env backend), and restart it"
    if _daemon_owned(cfg) is not None:
        return f"{SYSTEM_SET_HINT} {name}"
    return f"aegisctl secrets set {name}"


def _open_store(cfg: Config) -> SecretStore:
    account = _daemon_owned(cfg)
    if account is None:
        return open_secret_store(cfg.secrets)
    # the daemon account's store: root reads it as that account's (its owner check must too)
    directory = Path(cfg.secrets.dir or default_secrets_dir()).expanduser()
    return FileSecretStore(directory, owner_uid=account, set_hint=SYSTEM_SET_HINT)


def _store_fix(cfg: Config) -> str:
    if _daemon_owned(cfg) is not None and os.getuid() != 0:
        return "the store is the daemon account's: run `sudo aegisctl doctor` to check it"
    if cfg.secrets.backend == "file":
        return "see docs/OPERATIONS.md §5, Secrets in separated mode"
    return "see docs/OPERATIONS.md §2, Keyring set-up"


async def secrets_checks(cfg: Config) -> list[Check]:
    checks: list[Check] = []
    if not needed_secrets(cfg):
        # nothing to read: an absent or locked keyring is no failure of this config
        return [Check("secrets", "ok", "this config needs no secrets")]
    if cfg.secrets.backend == "env":
        checks.append(
            Check(
                "secrets-backend",
                "warn",
                'backend "env": secrets come from AEGIS_SECRET_* variables (tests and dev only)',
                'use backend = "keyring" and `aegisctl secrets set NAME`',
            )
        )
    try:
        store = _open_store(cfg)
        describe = getattr(store, "describe", None)
        if describe is not None:
            checks.append(Check("secrets-backend", "ok", f"keyring backend {await describe()}"))
        for name in needed_secrets(cfg):
            if await store.present(name):
                checks.append(Check(f"secret:{name}", "ok", "present"))
            else:
                checks.append(Check(f"secret:{name}", "fail", "missing", _secret_fix(cfg, name)))
    except AegisError as exc:
        checks.append(Check("secrets-backend", "fail", exc.message, _store_fix(cfg)))
    return checks

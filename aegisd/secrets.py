"""Secret stores: where aegisd's own secrets live (never the config file).

Owns the ``SecretStore`` protocol (and its writable extension), the store names and which of
them a config needs, the checks every backend applies to a name or a value, the ``env``
backend (tests and dev only; reads ``AEGIS_SECRET_<NAME>``) with its start-up warning, and
``open_secret_store``. The ``keyring`` backend lives in ``aegisd.keyring_store`` (which
imports ``keyring`` only when first used), the ``file`` backend in ``aegisd.file_store``, and
the name and value checks all of them share in ``aegisd.secret_checks`` (re-exported here).

Must not log, print or put into an exception any secret value: messages name the secret,
never its content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from aegisd.config import Config, SecretsConfig
from aegisd.errors import SecretsUnavailable
from aegisd.file_store import FileSecretStore
from aegisd.keyring_store import KeyringSecretStore
from aegisd.secret_checks import (
    MAX_SECRET_BYTES,
    SECRET_NAMES,
    check_secret_name,
    check_secret_value,
)

__all__ = [
    "MAX_SECRET_BYTES",
    "SECRET_NAMES",
    "EnvSecretStore",
    "MemorySecretStore",
    "SecretStore",
    "WritableSecretStore",
    "check_secret_name",
    "check_secret_value",
    "env_backend_warning",
    "env_var_name",
    "needed_secrets",
    "open_secret_store",
]


def env_var_name(name: str) -> str:
    """``auth0_client_secret`` -> ``AEGIS_SECRET_AUTH0_CLIENT_SECRET``."""
    return "AEGIS_SECRET_" + name.upper()


def needed_secrets(cfg: Config) -> tuple[str, ...]:
    """The secret names this config will ask the store for, in ``SECRET_NAMES`` order."""
    needed: set[str] = set()
    if cfg.auth0 is not None:
        if cfg.auth0.client_auth == "private_key_jwt":
            needed.add("auth0_private_key")
        else:
            needed.add("auth0_client_secret")
        for extra, secret in (
            (cfg.auth0.management, "management_client_secret"),
            (cfg.auth0.token_vault, "token_vault_client_secret"),
        ):
            if extra is not None:
                needed.add(
                    "auth0_private_key" if extra.client_auth == "private_key_jwt" else secret
                )
    return tuple(n for n in SECRET_NAMES if n in needed)


def env_backend_warning() -> str:
    """The warning aegisd prints at start when ``[secrets] backend = "env"``.

    Loud on purpose: this backend exists for tests and the dev tenant, and a production
    install that ends up on it has lost the protection the keyring gives.
    """
    names = ", ".join(env_var_name(n) for n in SECRET_NAMES)
    bar = "!" * 78
    return (
        f"{bar}\n"
        '!! WARNING: [secrets] backend = "env" -- for tests and the dev tenant ONLY.\n'
        f"!! aegisd reads its Auth0 secrets from environment variables ({names}).\n"
        "!! Environment variables are inherited by child processes, readable in\n"
        "!! /proc/<pid>/environ by your other processes, and easily end up in logs,\n"
        "!! shell history and crash reports. Do not use this with a real Auth0 tenant:\n"
        '!! remove the line (backend = "keyring" is the default) and store the secrets\n'
        "!! with `aegisctl secrets set NAME`. See docs/OPERATIONS.md.\n"
        f"{bar}"
    )


class SecretStore(Protocol):
    """Where secrets come from. ``get`` raises ``SecretsUnavailable`` when a secret is missing."""

    backend_name: str

    async def get(self, name: str) -> str: ...

    async def present(self, name: str) -> bool: ...


class WritableSecretStore(SecretStore, Protocol):
    """A store that ``aegisctl secrets set|delete`` can change (the keyring)."""

    async def set(self, name: str, value: str) -> None: ...

    async def delete(self, name: str) -> bool:
        """Remove the secret; ``False`` when it was not there."""
        ...


class EnvSecretStore:
    """Reads ``AEGIS_SECRET_<NAME>`` from an environment mapping (tests and dev only)."""

    backend_name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ

    async def get(self, name: str) -> str:
        check_secret_name(name)
        value = self._environ.get(env_var_name(name))
        if not value:
            raise SecretsUnavailable(
                f"secret {name!r} is not set (backend env: set {env_var_name(name)})"
            )
        return value

    async def present(self, name: str) -> bool:
        check_secret_name(name)
        return bool(self._environ.get(env_var_name(name)))


class MemorySecretStore:
    """A dict-backed store for tests."""

    backend_name = "memory"

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    async def get(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise SecretsUnavailable(f"secret {name!r} is not set") from None

    async def present(self, name: str) -> bool:
        return name in self._values

    async def set(self, name: str, value: str) -> None:
        check_secret_value(name, value)
        self._values[name] = value

    async def delete(self, name: str) -> bool:
        check_secret_name(name)
        return self._values.pop(name, None) is not None


def open_secret_store(
    cfg: SecretsConfig,
) -> EnvSecretStore | KeyringSecretStore | FileSecretStore:
    """Build the store the config names (the keyring backend is resolved on first use).

    Raises:
        SecretsUnavailable: the file backend's directory is not an absolute path.
    """
    if cfg.backend == "env":
        return EnvSecretStore()
    if cfg.backend == "file":
        return FileSecretStore.from_config(cfg)
    return KeyringSecretStore(service=cfg.service)

"""The dev tenant's state directory: what survives a restart, and how files are written.

Owns the file names and modes under ``state_dir``: ``signing-key.pem`` (the current RS256
key), ``clients.toml`` (client ids and secrets) and ``users.toml`` (users, connected accounts,
provider tokens), each 0600 in a 0700 directory, written atomically. A missing file is created
from fresh values; an unreadable one is an error (never silently replaced, or a running daemon
would lose its client). Blocking file I/O; async callers run it in a worker thread.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aegisd.devtenant.clients import Client, ClientRegistry, new_clients
from aegisd.devtenant.options import DevTenantOptions
from aegisd.devtenant.signing import KeySet, generate_rsa_key
from aegisd.devtenant.users import UserDirectory, default_users

__all__ = [
    "CLIENTS_FILE",
    "KEY_FILE",
    "USERS_FILE",
    "LoadedState",
    "ensure_dir",
    "load_state",
    "save_key",
    "save_users",
    "write_private",
]

KEY_FILE: Final = "signing-key.pem"
CLIENTS_FILE: Final = "clients.toml"
USERS_FILE: Final = "users.toml"


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` atomically with ``mode`` from the first byte (no world-readable window)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or the mode needs to be exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass
class LoadedState:
    keys: KeySet
    clients: list[Client]
    users: UserDirectory


def load_state(options: DevTenantOptions, *, wall: float) -> LoadedState:
    """Load the persisted key, clients and users, creating what is missing.

    Without ``state_dir`` everything is fresh and nothing is written.

    Raises:
        ValueError: a state file exists but cannot be parsed.
        OSError: the directory or a file cannot be read or written.
    """
    keep = options.keep_old_key_seconds
    if options.state_dir is None:
        users = default_users(
            options.user_id, options.user_email, now=wall, ttl=options.provider_token_ttl
        )
        return LoadedState(
            keys=KeySet(generate_rsa_key(), keep_old_seconds=keep),
            clients=new_clients(options.client_public_key_pem),
            users=UserDirectory(users),
        )
    state_dir = options.state_dir
    ensure_dir(state_dir)
    key_path = state_dir / KEY_FILE
    if key_path.exists():
        keys = KeySet.from_pem(key_path.read_bytes(), keep_old_seconds=keep)
    else:
        keys = KeySet(generate_rsa_key(), keep_old_seconds=keep)
        write_private(key_path, keys.private_pem())
    clients_path = state_dir / CLIENTS_FILE
    if clients_path.exists():
        text = clients_path.read_text("utf-8")
        clients = ClientRegistry.clients_from_toml(text, options.client_public_key_pem)
        upgraded = ClientRegistry(clients, issuer="").to_toml()
        if text.count("[[clients]]") != len(clients):  # a Custom API Client was added
            write_private(clients_path, upgraded.encode())
    else:
        clients = new_clients(options.client_public_key_pem)
        # the issuer only matters for assertions, not for the file
        write_private(clients_path, ClientRegistry(clients, issuer="").to_toml().encode())
    users_path = state_dir / USERS_FILE
    if users_path.exists():
        directory = UserDirectory.from_toml(users_path.read_text("utf-8"))
    else:
        directory = UserDirectory(
            default_users(
                options.user_id, options.user_email, now=wall, ttl=options.provider_token_ttl
            )
        )
        write_private(users_path, directory.to_toml().encode())
    return LoadedState(keys=keys, clients=clients, users=directory)


def save_key(state_dir: Path, keys: KeySet) -> None:
    write_private(state_dir / KEY_FILE, keys.private_pem())


def save_users(state_dir: Path, users: UserDirectory) -> None:
    write_private(state_dir / USERS_FILE, users.to_toml().encode())

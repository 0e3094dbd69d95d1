"""The names aegisd's secrets may have and the checks every secret store applies to them.

Owns ``SECRET_NAMES``, ``MAX_SECRET_BYTES``, ``check_secret_name`` and ``check_secret_value``:
the part every backend shares, kept apart so that the backends (``aegisd.keyring_store``,
``aegisd.file_store``) and ``aegisd.secrets`` (which opens them) import it without importing
each other. Must not quote a secret value in any message.
"""

from __future__ import annotations

from typing import Final

from aegisd.errors import SecretsUnavailable

__all__ = ["MAX_SECRET_BYTES", "SECRET_NAMES", "check_secret_name", "check_secret_value"]

SECRET_NAMES: Final = (
    "auth0_client_secret",
    "management_client_secret",
    "auth0_private_key",
    "token_vault_client_secret",
)

# A PEM RSA-4096 key is about 3.3 KB; anything near this limit is a mistake (a binary file
# piped in by accident), and D-Bus and the Keychain both have message limits of their own.
MAX_SECRET_BYTES: Final = 64 * 1024


def check_secret_name(name: str) -> None:
    """Raise ``SecretsUnavailable`` unless ``name`` is one of ``SECRET_NAMES``.

    The keyring is shared with every other program of the user; restricting the names keeps
    aegisd from reading or overwriting entries it does not own under a typo'd name.
    """
    if name not in SECRET_NAMES:
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise SecretsUnavailable(
            f"unknown secret name {shown!r}; known names: {', '.join(SECRET_NAMES)}"
        )


def check_secret_value(name: str, value: str) -> None:
    """Refuse values that cannot be right, without ever quoting them.

    Raises:
        SecretsUnavailable: the value is empty, too large, contains NUL, or (for
            ``auth0_private_key``) is not a PEM private key.
    """
    check_secret_name(name)
    if not value.strip():
        raise SecretsUnavailable(f"refusing to store an empty value for {name}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        raise SecretsUnavailable(
            f"refusing to store {name}: the value is larger than {MAX_SECRET_BYTES} bytes"
        )
    if "\x00" in value:
        raise SecretsUnavailable(f"refusing to store {name}: the value contains a NUL byte")
    if name == "auth0_private_key":
        text = value.strip()
        # Catches the common slip of typing the key's *path* at the prompt.
        if not (text.startswith("-----BEGIN ") and "PRIVATE KEY-----" in text):
            raise SecretsUnavailable(
                "refusing to store auth0_private_key: expected a PEM private key "
                "('-----BEGIN PRIVATE KEY-----' ...); pipe the file in: "
                "aegisctl secrets set auth0_private_key < key.pem"
            )

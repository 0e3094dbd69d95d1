"""Separated mode's secrets as systemd credentials: encrypted at rest with the host key or TPM.

Owns ``/etc/aegis/credentials/<name>.cred`` (written by ``systemd-creds encrypt``, the value
on its stdin, never in argv) and the drop-in ``aegisd.service.d/credentials.conf`` that
lists one ``LoadCredentialEncrypted=<name>:<path>`` per file, so that systemd decrypts them
into ``$CREDENTIALS_DIRECTORY`` when it starts aegisd; the daemon's file store reads that
directory first (``aegisd.file_store``). Used by ``aegisctl secrets set|delete|status
--system --systemd-creds``. Must not keep the value anywhere but the pipe to systemd-creds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aegisd.errors import SecretsUnavailable
from aegisd.secret_checks import SECRET_NAMES, check_secret_name, check_secret_value

__all__ = ["DROPIN", "CredentialStore"]

DROPIN: Final = "credentials.conf"
_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class CredentialStore:
    """Encrypted credentials under ``directory``, loaded by the drop-in in ``dropin_dir``."""

    directory: Path = Path("/etc/aegis/credentials")
    dropin_dir: Path = Path("/etc/systemd/system/aegisd.service.d")

    def path(self, name: str) -> Path:
        check_secret_name(name)
        return self.directory / f"{name}.cred"

    def present(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        return [n for n in SECRET_NAMES if self.present(n)]

    def set(self, name: str, value: str) -> None:
        check_secret_value(name, value)
        tool = shutil.which("systemd-creds")
        if tool is None:
            raise SecretsUnavailable(
                "systemd-creds not found (systemd 250 or later); store the secret as a file "
                "instead: leave out --systemd-creds"
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        target = self.path(name)
        tmp = target.with_name(f".{target.name}.tmp")
        # --name binds the ciphertext to this credential name: renaming the file cannot make
        # systemd hand it to the daemon as another secret.
        proc = subprocess.run(
            [tool, "encrypt", f"--name={name}", "-", str(tmp)],
            input=value.encode("utf-8"),
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            # systemd-creds never echoes its input; its message is about keys and TPMs.
            detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise SecretsUnavailable(
                f"systemd-creds encrypt failed for {name} (exit {proc.returncode}): "
                + (detail[0] if detail else "no message")
            )
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        self.write_dropin()

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        self.write_dropin()
        return True

    def dropin_text(self) -> str:
        lines = [
            "# Written by `aegisctl secrets set --system --systemd-creds`: systemd decrypts these",
            "# into $CREDENTIALS_DIRECTORY, where aegisd looks first.",
            "[Service]",
            *(f"LoadCredentialEncrypted={n}:{self.path(n)}" for n in self.names()),
        ]
        return "\n".join(lines) + "\n"

    def write_dropin(self) -> None:
        dropin = self.dropin_dir / DROPIN
        if not self.names():
            dropin.unlink(missing_ok=True)
            return
        self.dropin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = dropin.with_name(f".{DROPIN}.tmp")
        tmp.write_text(self.dropin_text())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dropin)

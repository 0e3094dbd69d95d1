"""The object every aegisctl command receives: global options, resolved lazily.

Owns nothing but the two global paths and how to resolve them; it must not open sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from aegisd.config import Config, load_config, resolve_config_path


@dataclass(frozen=True)
class CliContext:
    socket_path: str | None
    config_path: str | None

    def config_file(self) -> Path:
        return resolve_config_path(self.config_path)

    def load_config(self) -> Config:
        return load_config(self.config_path)

    def socket(self) -> Path:
        """The socket to talk to: ``--socket``/``AEGIS_SOCKET``, else the config's ``socket``,
        else the runtime-dir socket if present, else ``/run/aegis/aegisd.sock`` (separated)."""
        from aegisd.locate import discover_socket

        if self.socket_path:
            return Path(self.socket_path).expanduser()
        try:
            configured = self.load_config().daemon.socket
        except Exception:  # an invalid config must not stop `status` or `reload` from working
            configured = self._raw_socket_key()
        return discover_socket(configured)

    def _raw_socket_key(self) -> str | None:
        """``[daemon] socket`` read leniently, from a config that does not validate."""
        import tomllib

        try:
            raw = tomllib.loads(self.config_file().read_text())
            value = raw.get("daemon", {}).get("socket")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


pass_cli = click.make_pass_decorator(CliContext)

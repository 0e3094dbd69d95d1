"""The object every aegisctl command receives: global options, resolved lazily.

Owns nothing but the global options (socket, config, json) and how to resolve the paths; it
must not open sockets. Mutable because the options may also come after the sub-command
(``aegisctl status --socket S``), which click parses after the root group has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from aegisd.config import (
    Config,
    check_config,
    load_config,
    resolve_config_path,
)
from aegisd.errors import ConfigError


@dataclass
class CliContext:
    socket_path: str | None = None
    config_path: str | None = None
    json: bool = False

    def config_file(self) -> Path:
        return resolve_config_path(self.config_path)

    def load_config(self) -> Config:
        return load_config(self.config_path)

    def partial_config(self) -> Config | None:
        """The config as far as it is valid (bad keys left out), or None if unreadable.

        For commands that must work while the config is broken (``status``, ``audit``).
        """
        try:
            return self.load_config()
        except ConfigError:
            pass
        try:
            return check_config(self.config_file().read_bytes(), str(self.config_file()))[0]
        except OSError:
            return None

    def socket(self) -> Path:
        """The socket to talk to: ``--socket``/``AEGIS_SOCKET``, else the config's ``socket``,
        else the runtime-dir socket if present, else ``/run/aegis/aegisd.sock`` (separated)."""
        from aegisd.locate import discover_socket

        if self.socket_path:
            return Path(self.socket_path).expanduser()
        cfg = self.partial_config()  # a broken config must not stop `status` or `reload`
        return discover_socket(cfg.daemon.socket if cfg is not None else None)


pass_cli = click.make_pass_decorator(CliContext)

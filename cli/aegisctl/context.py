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
    default_socket_path,
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
        """The socket to talk to: ``--socket``/``AEGIS_SOCKET``, else the config's, else default."""
        if self.socket_path:
            return Path(self.socket_path).expanduser()
        cfg = self.partial_config()  # a broken config must not stop `status` from trying
        return cfg.socket_path() if cfg is not None else default_socket_path()


pass_cli = click.make_pass_decorator(CliContext)

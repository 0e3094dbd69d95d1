"""aegisctl entry point: the root click group, global options, and lazy sub-command loading.

This module owns the command table and the translation of ``AegisError`` into exit codes
(click style: each error knows its exit code). It must not talk to the daemon itself; each
command module does that through ``aegisd.client``. Sub-commands are imported only when used,
so ``aegisctl status`` does not pay for the dev tenant's or the deploy code's imports.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final

import click

from aegisctl.context import CliContext
from aegisd.errors import AegisError

# command name -> "module:attribute" (a click.Command or click.Group)
COMMANDS: Final[dict[str, str]] = {
    "status": "aegisctl.status:status",
    "pending": "aegisctl.approvals:pending",
    "cancel": "aegisctl.approvals:cancel",
    "lock": "aegisctl.approvals:lock",
    "audit": "aegisctl.audit:audit",
    "policy": "aegisctl.policy:policy",
    "reload": "aegisctl.reload:reload",
    "secrets": "aegisctl.secrets:secrets",
    "doctor": "aegisctl.doctor:doctor",
    "service": "aegisctl.service:service",
    "auth0": "aegisctl.auth0:auth0",
    "dev-tenant": "aegisctl.devtenant:dev_tenant",
    "demo": "aegisctl.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.option(
    "--socket",
    "socket_path",
    envvar="AEGIS_SOCKET",
    type=click.Path(dir_okay=False),
    help="Daemon socket (default: the user runtime dir; env AEGIS_SOCKET).",
)
@click.option(
    "--config",
    "config_path",
    envvar="AEGIS_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file (default: the user config dir; env AEGIS_CONFIG).",
)
@click.version_option(package_name="aegis", prog_name="aegisctl")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, config_path: str | None) -> None:
    """Operate aegisd, the credential broker for local AI agents."""
    ctx.obj = CliContext(socket_path=socket_path, config_path=config_path)


def main() -> None:
    """Console-script entry: run the CLI, rendering AegisError with its own exit code."""
    try:
        # without standalone mode, click *returns* the code of a ``click.exceptions.Exit``
        # raised by a command (e.g. ``audit verify`` on a broken chain) instead of raising it
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AegisError as exc:
        click.echo(f"aegisctl: {exc.message} [{exc.code}]", err=True)
        for problem in getattr(exc, "problems", [])[1:]:
            click.echo(f"  {problem}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)

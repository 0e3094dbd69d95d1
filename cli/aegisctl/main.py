"""aegisctl entry point: the root click group, global options, and lazy sub-command loading.

This module owns the command table, the CLI conventions every command shares (``-h`` and
``--help``, the global ``--socket``/``--config``/``--json`` accepted before or after the
sub-command, help summaries that are not cut off) and the translation of errors into exit
codes (click style: each error knows its exit code), as one line for people or, after
``--json``, as one JSON document. It must not talk to the daemon itself; each command module
does that through ``aegisd.client``. Sub-commands are imported only when used, so
``aegisctl status`` does not pay for the dev tenant's or the deploy code's imports.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final

import click

from aegisctl.context import CliContext
from aegisctl.output import error_output
from aegisd.errors import AegisError
from aegisd.version import DISTRIBUTION

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

CONTEXT_SETTINGS: Final = {"help_option_names": ["-h", "--help"]}
# commands that neither talk to aegisd nor read its config: no late --socket/--config
_SELF_CONTAINED: Final = frozenset({"demo", "dev-tenant"})
_SOCKET_HELP: Final = "Daemon socket (default: the user runtime dir; env AEGIS_SOCKET)."
_CONFIG_HELP: Final = "Config file (default: the user config dir; env AEGIS_CONFIG)."


def _set_socket(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    state = ctx.find_object(CliContext)
    if value is not None and state is not None:
        state.socket_path = value


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    state = ctx.find_object(CliContext)
    if value is not None and state is not None:
        state.config_path = value


def _late_global_options() -> list[click.Option]:
    """``--socket``/``--config`` on a sub-command: the same as before it (last one wins)."""
    path = click.Path(dir_okay=False)
    return [
        click.Option(
            ["--socket"], type=path, expose_value=False, callback=_set_socket, help=_SOCKET_HELP
        ),
        click.Option(
            ["--config"], type=path, expose_value=False, callback=_set_config, help=_CONFIG_HELP
        ),
    ]


def _conform(command: click.Command, *, paths: bool = True) -> None:
    """Give a loaded command the shared conventions (idempotent; recurses into groups)."""
    if command.short_help is None and command.help:
        # click cuts the summary at 45 characters in the command list; show the whole first
        # sentence instead (the formatter wraps it)
        first = command.help.strip().split("\n\n", 1)[0]
        command.short_help = " ".join(first.split())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _conform(sub, paths=paths)
        return
    if not paths:
        return
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    command.params += [o for o in _late_global_options() if o.opts[0] not in names]


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
        _conform(command, paths=cmd_name not in _SELF_CONTAINED)
        return command


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--socket",
    "socket_path",
    envvar="AEGIS_SOCKET",
    type=click.Path(dir_okay=False),
    help=_SOCKET_HELP,
)
@click.option(
    "--config",
    "config_path",
    envvar="AEGIS_CONFIG",
    type=click.Path(dir_okay=False),
    help=_CONFIG_HELP,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Commands that report print one JSON document, failures included (docs/CLI.md).",
)
@click.version_option(package_name=DISTRIBUTION, prog_name="aegisctl")
@click.pass_context
def cli(
    ctx: click.Context, socket_path: str | None, config_path: str | None, as_json: bool
) -> None:
    """Operate aegisd, the credential broker for local AI agents.

    Global options may also follow the command (aegisctl status --json). Shell completion:
    eval "$(_AEGISCTL_COMPLETE=bash_source aegisctl)" (zsh_source, fish_source).
    """
    state = ctx.ensure_object(CliContext)
    state.socket_path = socket_path
    state.config_path = config_path
    state.json = state.json or as_json


def _fail(state: CliContext, code: str, message: str, exit_code: int) -> None:
    if state.json:
        click.echo(error_output(code, message, exit_code).decode())
    else:
        click.echo(f"aegisctl: {message}" + (f" [{code}]" if code else ""), err=True)
    sys.exit(exit_code)


def main() -> None:
    """Console-script entry: run the CLI, rendering errors with their own exit codes."""
    state = CliContext()
    try:
        # without standalone mode, click *returns* the code of a ``click.exceptions.Exit``
        # raised by a command (e.g. ``audit verify`` on a broken chain) instead of raising it
        code = cli.main(standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        if state.json:
            _fail(state, "aborted", "aborted", 1)
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        if state.json:
            code = "usage" if isinstance(exc, click.UsageError) else "error"
            _fail(state, code, exc.format_message(), exc.exit_code)
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AegisError as exc:
        problems = getattr(exc, "problems", [])
        if state.json:
            _fail(state, exc.code, "; ".join(problems) or exc.message, exc.exit_code)
        click.echo(
            f"aegisctl: {exc.message if not problems else problems[0]} [{exc.code}]", err=True
        )
        for problem in problems[1:]:
            click.echo(f"  {problem}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail(state, "interrupted", "interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)

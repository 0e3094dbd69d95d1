"""``aegisctl policy check [FILE]``: validate a config and its policy without the daemon."""

from __future__ import annotations

import click

from aegisctl.context import CliContext, pass_cli
from aegisd.config import load_config
from aegisd.errors import ConfigError
from aegisd.policy import compile_policy


@click.group()
def policy() -> None:
    """Work with the policy (reads files; does not need the daemon)."""


@policy.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@pass_cli
def check(cli: CliContext, file: str | None) -> None:
    """Print every problem in FILE (default: the config) and exit non-zero if any.

    Warnings (printed as ``warning: ...``) do not change the exit status."""
    path = file or str(cli.config_file())
    try:
        cfg = load_config(path)
        pol = compile_policy(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) found", err=True)
        raise click.exceptions.Exit(ConfigError.exit_code) from None
    for warning in pol.warnings:
        click.echo(f"warning: {warning}", err=True)
    summary = f"{len(pol.actions)} action(s), {len(pol.callers)} caller rule(s)"
    if pol.warnings:
        summary += f", {len(pol.warnings)} warning(s)"
    click.echo(f"{path}: ok ({summary})")
    if not pol.callers:
        click.echo("note: no [[callers]] rules, so no process may request any action")

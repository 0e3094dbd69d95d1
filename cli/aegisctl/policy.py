"""``aegisctl policy check|show|propose``: validate, print and change the policy.

``check`` reads files and does not need the daemon. ``show`` prints the running daemon's
active policy (its ``[[callers]]`` and ``[actions]``) as TOML with its SHA-256 in a comment,
exactly in the form ``propose`` accepts. ``propose FILE`` sends a new policy to the daemon,
which applies it only after the approver approves on the phone. Exit codes of ``propose``:
0 applied (or nothing to change), 78 invalid, 8 denied, 9 expired, 2 too large for a frame.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from aegisctl.context import CliContext, pass_cli
from aegisctl.talk import call
from aegisd import wire
from aegisd.client import PendingEvent
from aegisd.config import load_config
from aegisd.errors import ConfigError
from aegisd.policy import compile_policy

# the text travels in one frame with its envelope (type, id, key names)
MAX_PROPOSAL_BYTES = wire.MAX_FRAME - 256


@click.group()
def policy() -> None:
    """Check, show or propose the policy."""


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


@policy.command()
@pass_cli
def show(cli: CliContext) -> None:
    """Print the daemon's active policy (TOML that `policy propose` accepts as is)."""
    result = call(cli.socket(), lambda c: c.show_policy())
    click.echo(result.text, nl=False)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def propose(cli: CliContext, file: str, as_json: bool) -> None:
    """Send FILE as the new policy; it applies only after approval on the phone."""
    data = Path(file).read_bytes()
    if len(data) > MAX_PROPOSAL_BYTES:
        raise click.UsageError(
            f"{file} is {len(data)} bytes; a proposal must fit one 64 KiB frame "
            f"(at most {MAX_PROPOSAL_BYTES} bytes): shorten descriptions or split actions"
        )
    text = data.decode("utf-8", "replace")

    def waiting(event: PendingEvent) -> None:
        left = max(0, round(event.expires_at - time.time()))
        click.echo(
            f"approve on your phone: {event.binding_message!r} (expires in {left} s)", err=True
        )

    result = call(cli.socket(), lambda c: c.propose_policy(text, on_pending=waiting))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "applied": result.applied,
                    "sha256": result.sha256,
                    "summary": result.summary,
                    "changes": result.changes,
                    "problems": result.problems,
                    "generation": result.generation,
                },
                indent=2,
            )
        )
    if result.problems:
        if not as_json:
            for problem in result.problems:
                click.echo(problem, err=True)
            click.echo(f"{len(result.problems)} problem(s): nothing was proposed", err=True)
        raise click.exceptions.Exit(ConfigError.exit_code)
    if as_json:
        return
    if not result.applied:
        click.echo(f"no change: the active policy already is this one ({result.sha256[:12]})")
        return
    click.echo(f"applied: {result.summary} (policy sha256 {result.sha256[:12]})")
    for change in result.changes:
        click.echo(f"  {change}")

"""``aegisctl policy check|show|propose``: validate, print and change the policy.

``check`` reads files and does not need the daemon. ``show`` prints the running daemon's
active policy (its ``[[callers]]`` and ``[actions]``) as TOML with its SHA-256 in a comment,
exactly in the form ``propose`` accepts. ``propose FILE`` sends a new policy to the daemon,
which applies it only after the approver approves on the phone. Exit codes of ``propose``:
0 applied (or nothing to change), 78 invalid, 8 denied, 9 expired, 2 too large for a frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import PolicyCheckOutput, ProposeOutput
from aegisctl.policy_check import check_file
from aegisctl.talk import call
from aegisd import wire
from aegisd.client import PendingEvent
from aegisd.errors import ConfigError

# the text travels in one frame with its envelope (type, id, key names)
MAX_PROPOSAL_BYTES = wire.MAX_FRAME - 256


@click.group()
def policy() -> None:
    """Check, show or propose the policy."""


@policy.command(short_help="Print every problem in a config file; show each phone message.")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@json_option
@pass_cli
def check(cli: CliContext, file: str | None, as_json: bool) -> None:
    """Print every problem in FILE (default: the config) and exit 78 if there is any.

    Each problem names the file, line and key, what was expected (the allowed values of an
    enum, a "did you mean" for an unknown key). Also shows how each binding message will look
    on the phone, and warns about caller-rule exe patterns that match nothing here.
    """
    report = check_file(file or str(cli.config_file()))
    if as_json:
        emit(report)
    else:
        _print_report(report)
    if report.problems:
        raise click.exceptions.Exit(ConfigError.exit_code)


def _print_report(report: PolicyCheckOutput) -> None:
    for problem in report.problems:
        click.echo(problem.render(), err=True)
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) found", err=True)
    else:
        summary = f"{report.actions} action(s), {report.callers} caller rule(s)"
        if report.warnings:
            summary += f", {len(report.warnings)} warning(s)"
        click.echo(f"{report.file}: ok ({summary})")
        if not report.callers:
            click.echo("note: no [[callers]] rules, so no process may request any action")
    if report.binding_messages:
        click.echo("binding messages, as the phone shows them (typical / longest values):")
        for b in report.binding_messages:
            click.echo(f"  {b.action}: {b.template!r}")
            click.echo(f"      {b.typical}")
            if b.longest != b.typical:
                click.echo(f"      {b.longest}")
    r = report.resolved
    click.echo(f"this Python resolves to {r.interpreter}")
    if r.aegis_mcp:
        click.echo(f"aegis-mcp is {r.aegis_mcp}, run by {r.aegis_mcp_interpreter or '?'}")
    for warning in [*report.warnings, *report.exe_warnings]:  # neither changes the exit status
        click.echo(f"warning: {warning}", err=True)


@policy.command()
@pass_cli
def show(cli: CliContext) -> None:
    """Print the daemon's active policy (TOML that `policy propose` accepts as is)."""
    result = call(cli.socket(), lambda c: c.show_policy())
    click.echo(result.text, nl=False)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@json_option
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
        emit(
            ProposeOutput(
                ok=not result.problems,
                applied=result.applied,
                sha256=result.sha256,
                summary=result.summary,
                changes=result.changes,
                problems=result.problems,
                generation=result.generation,
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

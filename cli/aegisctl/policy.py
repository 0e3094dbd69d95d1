"""``aegisctl policy check [FILE]``: validate a config and its policy without the daemon."""

from __future__ import annotations

import click

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import PolicyCheckOutput
from aegisctl.policy_check import check_file
from aegisd.errors import ConfigError


@click.group()
def policy() -> None:
    """Work with the policy (reads files; does not need the daemon)."""


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

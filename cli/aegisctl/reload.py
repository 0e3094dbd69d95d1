"""``aegisctl reload``: have the running daemon re-read its config (like SIGHUP, by socket).

For the operator: the daemon's own account or root (``sudo aegisctl reload`` in separated
mode). Exit codes: 0 reloaded, 78 the config is invalid (the old policy stays), others per
error class (3 daemon not running, 4 not the operator).
"""

from __future__ import annotations

import click

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import ReloadOutput
from aegisctl.talk import call
from aegisd.errors import ConfigError


@click.command()
@json_option
@pass_cli
def reload(cli: CliContext, as_json: bool) -> None:
    """Re-read the daemon's config and policy; an invalid config keeps the old policy."""
    result = call(cli.socket(), lambda c: c.reload())
    if as_json:
        emit(
            ReloadOutput(
                ok=result.ok,
                generation=result.generation,
                problems=result.problems,
                policy_sha256=result.policy_sha256,
            )
        )
    elif result.ok:
        click.echo(
            f"reloaded (generation {result.generation}, policy sha256 {result.policy_sha256[:12]})"
        )
    else:
        for problem in result.problems:
            click.echo(problem, err=True)
        click.echo("reload failed: the daemon keeps its current policy", err=True)
    if not result.ok:
        raise click.exceptions.Exit(ConfigError.exit_code)

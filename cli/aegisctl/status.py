"""``aegisctl status``: is the daemon up, who is connected, what is pending, does the audit hold.

Exit codes: 0 ok, 3 daemon not running (with a hint), others per error class.
"""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import StatusOutput
from aegisctl.talk import call
from aegisd import wire
from aegisd.config import Config
from aegisd.daemon import instance_lock
from aegisd.errors import DaemonUnavailable


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if h or d:
        parts.append(f"{h}h")
    if m or h or d:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def _socketless(socket: Path, cli: CliContext) -> DaemonUnavailable | None:
    """Nothing at the socket, but a daemon holds its audit log's lock (issue 13.10): say so,
    rather than "not running" (someone deleted its socket; no client can reach it)."""
    audit = (cli.partial_config() or Config()).audit_path()
    found = instance_lock.without_socket(socket, audit)
    if found is None or found.state != "held":
        return None
    pid = found.pid if found.pid is not None else "?"
    return DaemonUnavailable(
        f"{instance_lock.socket_gone(found.pid, socket)}; restart it (`kill -TERM {pid}`, "
        "then start aegisd again)"
    )


def status_output(report: wire.StatusReport) -> StatusOutput:
    """The documented JSON of ``status`` (typed Auth0 values, when the daemon sends them)."""
    data = msgspec.to_builtins(report)
    for internal in ("type", "id", "auth0_state"):
        data.pop(internal, None)
    data["auth0"] = report.auth0_state or report.auth0
    return msgspec.convert(data, StatusOutput)


@click.command()
@json_option
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """Show the daemon's state (talks to the running daemon over its socket)."""
    socket = cli.socket()
    try:
        report = call(socket, lambda c: c.status())
    except DaemonUnavailable as exc:
        raise _socketless(socket, cli) or exc from None
    if as_json:
        emit(status_output(report))
        if not report.audit_ok:
            raise click.exceptions.Exit(1)
        return
    click.echo(f"aegisd {report.daemon_version}  pid {report.pid}  up {_duration(report.uptime)}")
    if report.mode:
        who = f"{report.daemon_user or '?'}, uid {report.daemon_uid}"
        click.echo(f"  mode     {report.mode} (aegisd runs as {who}; {report.hardening})")
    click.echo(f"  socket   {report.socket}")
    click.echo(f"  config   {report.config or '(none: defaults)'}")
    click.echo(
        f"  policy   {report.actions} action(s), {report.callers} caller rule(s), "
        f"generation {report.policy_generation}"
    )
    if report.policy_sha256:
        click.echo(f"           sha256 {report.policy_sha256[:12]} from {report.policy_source}")
    if report.callers == 0:
        click.echo("           no [[callers]] rules: every action is denied (default deny)")
    click.echo(f"  pending  {report.pending} approval(s)")
    mark = "ok" if report.audit_ok else "BROKEN"
    if report.audit_ok and report.audit_verifying:
        mark = "checking"
    click.echo(f"  audit    {report.audit_log} [{mark}] {report.audit_detail}")
    for warning in report.audit_warnings:
        click.echo(f"           warning: {warning}")
    if report.auth0:
        shown = ("issuer", "discovery", "jwks_keys", "ciba_waiting", "last_error", "state")
        parts = [
            f"{k}={report.auth0[k]}" for k in shown if report.auth0.get(k) not in (None, "", "None")
        ]
        click.echo("  auth0    " + " ".join(parts) + "  (all fields: --json)")
    if report.missing_secrets:
        click.echo(
            f"  secrets  MISSING {', '.join(report.missing_secrets)} (approvals will fail; "
            "see `aegisctl doctor`)"
        )
    click.echo(f"  peers    {len(report.peers)} connected")
    for p in report.peers:
        exe = p.exe if p.exe_verified else "exe unverified"
        click.echo(f"           pid {p.pid} uid {p.uid} {exe or '?'} caller={p.caller or '-'}")
    if not report.audit_ok:
        raise click.exceptions.Exit(1)

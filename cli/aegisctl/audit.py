"""``aegisctl audit tail|verify``: read the hash-chained audit log.

These read the log file directly (same user as the daemon); they do not need the daemon.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from aegisctl.context import CliContext, pass_cli
from aegisd.audit import verify_files


def _path(cli: CliContext, explicit: str | None) -> Path:
    return Path(explicit) if explicit else cli.load_config().audit_path()


def _line(rec: dict[str, object]) -> str:
    ts = rec.get("ts")
    when = (
        datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(ts, int | float)
        else "?"
    )
    skip = {"seq", "ts", "event", "prev", "hash"}
    rest = " ".join(
        f"{k}={json.dumps(v)}" for k, v in rec.items() if k not in skip and v is not None
    )
    return f"{rec.get('seq')!s:>6} {when} {rec.get('event')!s:<16} {rest}"


def _parse(raw: bytes) -> dict[str, object] | None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


@click.group()
def audit() -> None:
    """Read and verify the audit log (reads the file directly)."""


@audit.command()
@click.option("-n", "count", default=20, show_default=True, help="Records to show.")
@click.option("-f", "follow", is_flag=True, help="Keep printing new records.")
@click.option("--json", "as_json", is_flag=True, help="Raw JSON lines.")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Log file to read.")
@pass_cli
def tail(cli: CliContext, count: int, follow: bool, as_json: bool, file: str | None) -> None:
    """Show the last records."""
    path = _path(cli, file)
    try:
        f = open(path, "rb")  # noqa: SIM115 - kept open for -f
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no audit log yet") from None
    with f:
        lines = f.readlines()[-count:] if count > 0 else []
        for raw in lines:
            rec = _parse(raw)
            if rec is not None:
                click.echo(raw.decode().rstrip() if as_json else _line(rec))
        while follow:
            raw = f.readline()
            if not raw:
                time.sleep(0.2)
                continue
            rec = _parse(raw)
            if rec is not None:
                click.echo(raw.decode().rstrip() if as_json else _line(rec))


@audit.command()
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Log file to verify.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def verify(cli: CliContext, file: str | None, as_json: bool) -> None:
    """Check the hash chain: detects edited, deleted or reordered records and torn tails."""
    path = _path(cli, file)
    if not path.exists():
        raise click.ClickException(f"{path}: no audit log")
    result = verify_files(path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "files": result.files,
                    "problems": result.problems,
                    "warnings": result.warnings,
                },
                indent=2,
            )
        )
    else:
        click.echo(result.summary())
        for p in result.problems:
            click.echo(f"  problem: {p}")
        for w in result.warnings:
            click.echo(f"  warning: {w}")
    if not result.ok:
        raise click.exceptions.Exit(1)

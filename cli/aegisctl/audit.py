"""``aegisctl audit tail|verify``: read the hash-chained audit log.

These read the log file directly (same user as the daemon). They ask the running daemon
where its log is (``Status.audit_log``) and fall back to the config's path when none runs;
they never need a valid config. Human ``tail`` shows local times, short digests and no
bookkeeping fields; ``--json`` prints every record exactly as stored.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Final

import click

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import AuditVerifyOutput
from aegisctl.talk import call
from aegisd import wire
from aegisd.config import default_audit_path
from aegisd.daemon.audit import verify_files
from aegisd.daemon.audit_anchor import AnchorState, read_anchor
from aegisd.errors import AegisError, NotFound


def _path(cli: CliContext, explicit: str | None) -> Path:
    return _locate(cli, explicit)[0]


def _locate(cli: CliContext, explicit: str | None) -> tuple[Path, wire.StatusReport | None]:
    """The log to read: ``--file``, else the running daemon's own, else the config's.

    Asking the daemon first means ``aegisctl`` reads the log of the daemon it talks to even
    when its own config names another, and works while the config is invalid (that is when
    the ``reload_failed`` record matters). The daemon's report also carries its tip.
    """
    try:
        report: wire.StatusReport | None = call(cli.socket(), lambda c: c.status())
    except AegisError:  # not running, or not answering us: read the config's log
        report = None
    if explicit:
        return Path(explicit), report
    if report is not None and report.audit_log:
        return Path(report.audit_log), report
    cfg = cli.partial_config()
    return (cfg.audit_path() if cfg is not None else default_audit_path()), report


def _anchor(path: Path, report: wire.StatusReport | None) -> tuple[AnchorState, str]:
    """The tip to compare with: the running daemon's (from its memory), else the anchor file."""
    if report is not None and report.audit_tip_seq and Path(report.audit_log) == path:
        return AnchorState((report.audit_tip_seq, report.audit_tip_hash)), "the running daemon"
    return read_anchor(path), "the anchor file"


_HIDDEN: Final = frozenset(
    {"seq", "ts", "event", "prev", "hash", "conn", "request", "mode", "upstream"}
)
_HEX: Final = re.compile(r"(sha256:)?[0-9a-f]{32,}")


def _short(key: str, value: object) -> str:
    if isinstance(value, str) and _HEX.fullmatch(value):
        return value[: value.index(":") + 13] if value.startswith("sha256:") else value[:12]
    if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith("_at"):
        return _clock(float(value))
    return json.dumps(value)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%H:%M:%S")


def _line(rec: dict[str, object]) -> str:
    """One record for people: local time, short digests, no bookkeeping fields."""
    ts = rec.get("ts")
    when = (
        datetime.fromtimestamp(float(ts)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(ts, int | float)
        else "?"
    )
    rest = " ".join(
        f"{k}={_short(k, v)}"
        for k, v in rec.items()
        if k not in _HIDDEN and v is not None and v != [] and v != {}
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
@json_option
@click.option(
    "--file", "file", type=click.Path(dir_okay=False), help="Log file (default: the daemon's)."
)
@pass_cli
def tail(cli: CliContext, count: int, follow: bool, as_json: bool, file: str | None) -> None:
    """Show the last records (--json: one stored record per line)."""
    path = _path(cli, file)
    try:
        f = open(path, "rb")  # noqa: SIM115 - kept open for -f
    except FileNotFoundError:
        raise NotFound(f"{path}: no audit log yet") from None
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
@click.option(
    "--file", "file", type=click.Path(dir_okay=False), help="Log file (default: the daemon's)."
)
@json_option
@pass_cli
def verify(cli: CliContext, file: str | None, as_json: bool) -> None:
    """Check the hash chain: edited, deleted, reordered or pruned records, torn tails, and a
    log that ends before the daemon's tip (truncated; the tip comes from the running daemon,
    else the anchor file)."""
    path, report = _locate(cli, file)
    if not path.exists():
        raise NotFound(f"{path}: no audit log")
    anchor, source = _anchor(path, report)
    result = verify_files(path, anchor=anchor.tip)
    if anchor.problem and anchor.tip is not None:
        result.warnings.append(anchor.problem)  # present, only not authenticated
    elif anchor.problem:
        result.ok = False
        result.problems.append(anchor.problem)
    if as_json:
        emit(
            AuditVerifyOutput(
                ok=result.ok,
                path=str(path),
                records=result.records,
                files=result.files,
                problems=result.problems,
                warnings=result.warnings,
                pruned=result.pruned,
                anchor_seq=anchor.tip[0] if anchor.tip else 0,
            )
        )
    else:
        click.echo(result.summary())
        for p in result.problems:
            click.echo(f"  problem: {p}")
        for w in result.warnings:
            click.echo(f"  warning: {w}")
        if anchor.tip is not None:
            click.echo(f"  tip: seq {anchor.tip[0]} from {source}")
    if not result.ok:
        raise click.exceptions.Exit(1)

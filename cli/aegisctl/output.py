"""Printing for people and scripts: ``--json``, failures as JSON, and ok/warn/FAIL colour.

Owns how a command's result reaches stdout: ``json_option`` (one definition of ``--json``,
honouring the global ``aegisctl --json``), ``emit`` (one JSON document from an ``outputs``
Struct), ``error_output`` (what ``main`` prints when a ``--json`` command fails) and
``verdict`` (coloured only on a terminal, never with ``NO_COLOR``). It must not decide what a
command reports, and it never prints secrets (it prints only what it is handed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

import click
import msgspec

from aegisctl.context import CliContext
from aegisctl.outputs import ErrorInfo, ErrorOutput

__all__ = ["colour_enabled", "emit", "error_output", "json_option", "verdict"]

F = TypeVar("F", bound=Callable[..., Any])


def _mark_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    state = ctx.find_object(CliContext)
    if state is None:
        return value
    if value:
        state.json = True  # main() prints a failure as JSON too
    return value or state.json


def json_option(f: F) -> F:
    """``--json`` (parameter ``as_json``): true also after ``aegisctl --json CMD``."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=_mark_json,
        help="Print one JSON document (schema: docs/CLI.md).",
    )(f)


def emit(doc: msgspec.Struct) -> None:
    """Print one output Struct as indented JSON on stdout."""
    click.echo(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())


def error_output(code: str, message: str, exit_code: int) -> bytes:
    """The document ``--json`` commands print when they fail (``ok`` false)."""
    doc = ErrorOutput(error=ErrorInfo(code=code, message=message, exit_code=exit_code))
    return msgspec.json.format(msgspec.json.encode(doc), indent=2)


def colour_enabled(stream: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    out = sys.stdout if stream is None else stream
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


_STYLES = {"ok": {"fg": "green"}, "warn": {"fg": "yellow"}, "fail": {"fg": "red", "bold": True}}


def verdict(mark: str, level: str, *, colour: bool) -> str:
    """``mark`` (e.g. ``[FAIL]``) in the colour of ``level`` when ``colour`` is on."""
    return click.style(mark, **_STYLES[level]) if colour and level in _STYLES else mark  # type: ignore[arg-type]

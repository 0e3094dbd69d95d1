"""The ``aegis-mcp`` command line, in the style of aegisd and aegisctl (click).

Owns the options (``-h``/``--help``, ``--version``, ``--socket``, ``--max-wait``,
``--log-level``) and logging set-up; it must not import the MCP SDK or trio before the
options are parsed (``server`` imports them lazily), so ``aegis-mcp -h`` stays quick.
"""

from __future__ import annotations

import logging
import sys

import click

from aegisd.mcp_shim.server import DEFAULT_MAX_WAIT, Shim, serve_stdio
from aegisd.version import DISTRIBUTION

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """``aegis-mcp [--socket PATH] [--max-wait S]``: run the shim on trio until stdin closes."""
    _command().main(args=argv, prog_name="aegis-mcp")


def _command() -> click.Command:
    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option(
        "--socket",
        envvar="AEGIS_SOCKET",
        type=click.Path(dir_okay=False),
        help="aegisd's socket (default: the user runtime dir, then /run/aegis; env AEGIS_SOCKET).",
    )
    @click.option(
        "--max-wait",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_MAX_WAIT,
        show_default=True,
        metavar="S",
        help="Seconds a call waits for an approval before it returns approval_pending "
        "(keep it below the host's tool timeout).",
    )
    @click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"]),
        help="What the shim logs on stderr (the MCP host usually keeps it).",
    )
    @click.version_option(package_name=DISTRIBUTION, prog_name="aegis-mcp")
    def aegis_mcp(socket: str | None, max_wait: float, log_level: str) -> None:
        """MCP stdio server exposing the aegisd actions this caller may use.

        An MCP host (Claude Desktop, Claude Code, Cursor, OpenClaw) starts it and talks over
        stdin/stdout; it holds no secrets and asks aegisd which actions its caller rule allows.
        """
        logging.basicConfig(
            level=logging.WARNING,
            format="aegis-mcp[%(process)d] %(levelname)s: %(message)s",
            stream=sys.stderr,
        )
        logging.getLogger("aegisd.mcp_shim").setLevel(log_level.upper())

        import trio

        try:
            trio.run(serve_stdio, Shim(socket, max_wait=max_wait))
        except KeyboardInterrupt:
            sys.exit(130)

    return aegis_mcp

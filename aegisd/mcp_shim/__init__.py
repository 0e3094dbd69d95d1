"""``aegis-mcp``: the MCP stdio server an agent launches to reach aegisd.

Each action the daemon lists for this caller becomes a tool; a call becomes a ``Proxy``
request, so the model sees the API's answer and never a credential. The package is split by
concern:

* ``tools``: which tools exist and what a host sees of them (schemas, titles, annotations);
* ``claims``: the in-memory handles that let a repeated call re-attach to its own approval;
* ``tasks``: MCP Tasks (2025-11-25) for hosts that poll a long call instead of holding it;
* ``progress``: how a waiting call shows the pending approval (progress, task status);
* ``server``: the session, the handlers and the policy watcher;
* ``cli``: the command line (``main``);

and ``aegisd.mcp_results`` holds the result shapes (shared with the SDK's decorator). It
must not hold or show a credential, nor fail to start when aegisd is down: then it lists a
single ``aegis_status`` tool and announces the real tools once the daemon answers.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """The ``aegis-mcp`` console script (``aegisd.mcp_shim.cli.main``).

    Imported here, not at the top: the submodules import each other by their own names, so
    the package itself stays out of every import chain (no cycle through ``__init__``).
    """
    from aegisd.mcp_shim.cli import main as run

    run(argv)

"""A small MCP server of your own whose tool gets a GitHub token from aegisd just in time.

Run it from an MCP host (see ``examples/mcp-hosts/``) with the Python that has Aegis
installed: ``python examples/custom_server/triage_server.py``. It needs the
``github.issue_token`` action of ``examples/policies/github.toml`` and a caller rule that
matches this script (``argv = ["*triage_server.py*"]``).

What ``@with_async_authorization`` does for the ``label_issue`` tool:

* before the function runs it asks aegisd for ``github.issue_token`` with the tool's
  ``owner`` and ``repo`` arguments, so your phone shows "GitHub token for triage in
  owner:repo" and the approval is bound to that repository;
* while the push is pending, the host sees MCP progress ("Approve on your phone: …");
* after your approval the function runs with ``credentials`` filled in (that parameter is not
  part of the tool's input schema, so the model never sees or sends it); the token is used for
  one request and forgotten when the call returns;
* a denial, an expiry or a stopped daemon comes back as an ``isError`` tool result with
  ``structuredContent.error.code`` (``approval_denied``, ``approval_expired``,
  ``daemon_unavailable``…), the same shape aegis-mcp uses.

This file holds no credential and reads none from the environment. ``GITHUB_API_URL`` only
lets the tests point it at a local server.
"""

from __future__ import annotations

import os

import httpx
import trio
from mcp.server.mcpserver import Context, MCPServer

from aegisd.client import Credentials, with_async_authorization

GITHUB_API = os.environ.get("GITHUB_API_URL", "https://api.github.com")

server = MCPServer(
    "github-triage",
    instructions="Label GitHub issues. Each call asks the owner to approve on their phone.",
)


@server.tool()
@with_async_authorization("github.issue_token", params=["owner", "repo"])
async def label_issue(
    owner: str, repo: str, number: int, label: str, ctx: Context, credentials: Credentials
) -> list[str]:
    """Add a label to an issue; returns the issue's labels afterwards."""
    async with httpx.AsyncClient(base_url=GITHUB_API, timeout=15) as http:
        response = await http.post(
            f"/repos/{owner}/{repo}/issues/{number}/labels",
            json={"labels": [label]},
            headers={
                "authorization": f"{credentials.token_type} {credentials.access_token}",
                "accept": "application/vnd.github+json",
                "x-github-api-version": "2022-11-28",
            },
        )
    response.raise_for_status()  # an HTTP error becomes an isError result (text withheld)
    return [item["name"] for item in response.json()]


def main() -> None:
    trio.run(server.run_stdio_async)  # on trio, like aegis-mcp; never server.run()


if __name__ == "__main__":
    main()

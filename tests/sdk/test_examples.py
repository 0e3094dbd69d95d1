"""The files under ``examples/`` work: policies compile, host configs launch aegis-mcp with no
secret, and the custom MCP server's decorated tool runs end to end against a real aegisd.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import trio
from mcp import Client

from aegisd.config import load_config
from aegisd.policy import compile_policy

from .harness import AegisdProcess, Upstream, cleanup, start_aegisd

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 20

ISSUE_TOKEN = """
[actions."github.issue_token"]
description = "A short-lived GitHub token for labelling issues in one repository"
approval = "ciba"
binding_message = "GitHub token for triage in {owner}/{repo}"
params = { owner = "^[A-Za-z0-9-]{1,39}$", repo = "^[A-Za-z0-9._-]{1,100}$" }
credential = { kind = "token_vault", connection = "github" }
delivery = "token"
"""


@pytest.mark.parametrize("name", ["github.toml", "stripe.toml"])
def test_policies_compile(name: str) -> None:
    policy = compile_policy(load_config(EXAMPLES / "policies" / name))
    assert policy.actions and policy.callers
    for action in policy.actions.values():
        assert action.spec.description
        if action.spec.approval == "ciba":
            sample = {p: "x" for p in action.patterns}
            assert len(action.binding_message(sample, "0" * 64)) <= 64


def test_github_policy_shape() -> None:
    actions = compile_policy(load_config(EXAMPLES / "policies" / "github.toml")).actions
    assert actions["github.list_public_repos"].spec.approval == "none"
    assert actions["github.create_issue"].spec.approval == "ciba"
    assert actions["github.delete_repo"].spec.approval == "ciba"
    assert actions["github.issue_token"].spec.delivery == "token"
    stripe = compile_policy(load_config(EXAMPLES / "policies" / "stripe.toml")).actions
    refund = stripe["stripe.refund"].spec
    assert refund.approval == "ciba" and refund.request is not None and not refund.request.body


@pytest.mark.parametrize("path", sorted((EXAMPLES / "mcp-hosts").glob("*.json")))
def test_host_configs_launch_the_shim_without_secrets(path: Path) -> None:
    data = json.loads(path.read_text())
    servers = data.get("mcpServers") or data["mcp"]["servers"]
    shim = servers["aegis"]
    assert shim["command"].endswith("/aegis-mcp")
    assert not shim.get("env")  # nothing secret, nothing at all
    text = path.read_text().lower()
    assert "token" not in text and "secret" not in text and "key" not in text


def load_triage_server(monkeypatch: pytest.MonkeyPatch, api: str) -> ModuleType:
    monkeypatch.setenv("GITHUB_API_URL", api)
    spec = importlib.util.spec_from_file_location(
        "triage_server_example", EXAMPLES / "custom_server" / "triage_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def triage_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(
        upstream, caller_actions=("t.*", "github.issue_token"), extra=ISSUE_TOKEN
    )
    yield process
    cleanup(process)


async def test_custom_server_example_end_to_end(
    triage_aegisd: AegisdProcess,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AEGIS_SOCKET", str(triage_aegisd.socket))
    module = load_triage_server(monkeypatch, upstream.url)
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    with trio.fail_after(TIMEOUT):
        async with Client(module.server, mode="legacy") as client:
            (tool,) = (await client.list_tools()).tools
            result = await client.call_tool(
                "label_issue",
                {"owner": "octo", "repo": "hello", "number": 7, "label": "triage"},
                progress_callback=on_progress,
            )
    assert set(tool.input_schema["properties"]) == {"owner", "repo", "number", "label"}
    assert not result.is_error, result
    assert result.structured_content == {"result": ["triage"]}
    assert messages[0].startswith("Approve on your phone: GitHub token for triage in octo:hello")
    seen = upstream.seen[-1]
    assert seen.path == "/repos/octo/hello/issues/7/labels"
    assert seen.headers["authorization"].removeprefix("Bearer ") in triage_aegisd.issued()

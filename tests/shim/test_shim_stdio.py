"""aegis-mcp as a subprocess, driven over stdio by the official MCP SDK (and by hand).

The daemon is a real aegisd process whose approver is scripted by the ``outcome`` parameter
(``tests/sdk/scripted_daemon.py``); the API is a local HTTP server. ``trio.fail_after`` bounds
every test; the SDK's ``stdio_client`` closes, terminates and reaps the shim on exit.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import trio
from mcp import Client, ClientSession, stdio_client
from mcp.types import CallToolResult

from aegisd.client import AegisClient
from tests.sdk.harness import (
    AegisdProcess,
    Upstream,
    cleanup,
    policy_toml,
    private_dir,
    start_aegisd,
)

from .conftest import SHIM, shim_env, shim_params
from .rawmcp import raw_shim

TIMEOUT = 30
POLICY_TOOLS = {
    "t_binary",
    "t_delete",
    "t_get",
    "t_missing",
    "t_note",
    "t_read",
    "t_redirect",
    "t_text",
}


def error_code(result: CallToolResult) -> str:
    assert result.is_error, result
    assert result.structured_content is not None
    code: str = result.structured_content["error"]["code"]
    return code


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def no_pending(aegisd: AegisdProcess) -> None:
    async with AegisClient(aegisd.socket) as c:
        while await c.pending():
            await trio.sleep(0.02)


def withdrawn(aegisd: AegisdProcess, repo: str) -> bool:
    return any(
        e["event"] == "withdrawn" and e.get("action") == "t.delete" for e in aegisd.audit_events()
    ) and any(
        e["event"] == "request" and e.get("params", {}).get("repo") == repo
        for e in aegisd.audit_events()
    )


# ---- listing and plain calls ---------------------------------------------------------------


async def test_tools_match_the_policy(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
    assert init.server_info.name == "aegis-mcp"
    assert init.capabilities.tools is not None
    # t.token (token delivery), t.denied (approval = deny) and other.admin (not this
    # caller's) are not offered
    assert set(tools) == POLICY_TOOLS
    get = tools["t_get"]
    assert get.description == "Show one repository"
    assert get.input_schema == {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    assert "approval" in (tools["t_delete"].description or "")
    assert get.title == "t.get" and get.output_schema is not None
    assert get.annotations is not None and get.annotations.read_only_hint is True
    delete = tools["t_delete"]
    assert delete.annotations is not None and delete.annotations.destructive_hint is True
    assert delete.execution is not None and delete.execution.task_support == "optional"
    assert set(tools["t_note"].input_schema["properties"]) == {"body"}


async def test_proxy_calls_return_the_api_answer(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listing = await session.call_tool("t_read", {})
                one = await session.call_tool("t_get", {"name": "scratch"})
                note = await session.call_tool("t_note", {"body": "remember the milk"})
                text = await session.call_tool("t_text", {})
                binary = await session.call_tool("t_binary", {})
                missing = await session.call_tool("t_missing", {})
                redirect = await session.call_tool("t_redirect", {})
    assert not listing.is_error
    assert listing.structured_content == {
        "status": 200,
        "headers": {"content-type": "application/json"},
        "body": ["aegis-demo", "scratch"],
    }
    assert json.loads(text_of(listing)) == ["aegis-demo", "scratch"]
    assert one.structured_content is not None
    assert one.structured_content["body"] == {"name": "scratch"}
    assert one.structured_content["headers"]["x-upstream"] == "test"
    assert note.structured_content is not None
    assert note.structured_content["status"] == 201
    assert note.structured_content["body"] == {"received": "remember the milk"}
    assert text.structured_content is not None and text.structured_content["body"] == "plain words"
    assert binary.structured_content is not None
    assert binary.structured_content["body"] is None and binary.structured_content["body_base64"]
    assert error_code(missing) == "upstream_error"
    assert missing.structured_content is not None
    assert missing.structured_content["status"] == 404
    assert "HTTP 404" in text_of(missing)
    assert error_code(redirect) == "upstream_error"  # the daemon never follows redirects


async def test_refusals_are_is_error_results(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                unknown = await session.call_tool("t_nope", {})
                token = await session.call_tool("t_token", {"outcome": "approve"})
                bad = await session.call_tool("t_get", {"name": "../../etc"})
                missing = await session.call_tool("t_get", {})
                nested = await session.call_tool("t_get", {"name": {"x": 1}})
                extra = await session.call_tool("t_read", {"unexpected": "1"})
    assert error_code(unknown) == "unknown_action"
    assert error_code(token) == "unknown_action"  # token actions are not tools of the shim
    assert error_code(bad) == "invalid_params" and "../../etc" not in text_of(bad)
    assert error_code(missing) == "invalid_params"
    assert error_code(nested) == "invalid_params"
    assert error_code(extra) == "invalid_params"


# ---- approvals -----------------------------------------------------------------------------


async def test_approval_reports_progress_then_answers(
    aegisd: AegisdProcess, upstream: Upstream
) -> None:
    reports: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, message))

    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(
                    "t_delete",
                    {"repo": "old-experiments", "outcome": "approve"},
                    progress_callback=on_progress,
                )
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["status"] == 204
    assert len(reports) == 1
    message = reports[0][1] or ""
    assert message.startswith("Approve on your phone: Delete old-experiments approve #")
    assert upstream.seen[-1].path == "/repos/old-experiments"


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("deny", "approval_denied"),
        ("expire", "approval_expired"),
        ("unavailable", "approval_unavailable"),
        ("nocred", "credential_unavailable"),
        ("crash", "internal"),
    ],
)
async def test_approval_refusals_map_to_codes(
    aegisd: AegisdProcess, outcome: str, code: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("t_delete", {"repo": "r", "outcome": outcome})
    assert error_code(result) == code
    assert "scripted crash" not in text_of(result)
    assert "Traceback" not in text_of(result)


async def test_client_cancellation_withdraws_the_approval(aegisd: AegisdProcess) -> None:
    pending = trio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        pending.set()

    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        await session.call_tool(
                            "t_delete",
                            {"repo": "cancel-me", "outcome": "hang"},
                            progress_callback=on_progress,
                        )

                    nursery.start_soon(call)
                    await pending.wait()
                    nursery.cancel_scope.cancel()  # the SDK sends notifications/cancelled
                await no_pending(aegisd)
                after = await session.call_tool("t_read", {})  # the session carries on
    assert not after.is_error
    assert withdrawn(aegisd, "cancel-me")


async def test_operator_cancel_is_an_is_error_result(aegisd: AegisdProcess) -> None:
    # the operator is aegisctl under the harness's operator rule: it sees the shim's approval
    ctl = [str(SHIM.parent / "aegisctl"), "--socket", str(aegisd.socket)]

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        listed = await trio.run_process([*ctl, "pending", "--json"], capture_stdout=True)
        for info in json.loads(listed.stdout)["pending"]:
            if "operator" in info["binding_message"]:
                await trio.run_process([*ctl, "cancel", info["pending_id"]], capture_stdout=True)

    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(
                    "t_delete",
                    {"repo": "operator", "outcome": "hang"},
                    progress_callback=on_progress,
                )
    assert error_code(result) == "cancelled"


async def test_stdin_close_withdraws_the_approval(aegisd: AegisdProcess) -> None:
    command = [str(SHIM), "--socket", str(aegisd.socket)]
    with trio.fail_after(TIMEOUT):
        async with raw_shim(command, shim_env()) as shim:
            await shim.initialize()
            await shim.request(
                "tools/call",
                {
                    "name": "t_delete",
                    "arguments": {"repo": "stdin-closed", "outcome": "hang"},
                    "_meta": {"progressToken": "p1"},
                },
            )
            note = await shim.wait_for(lambda m: m.get("method") == "notifications/progress")
            assert note["params"]["progressToken"] == "p1"
            await shim.close_stdin()  # no cancel notification: the host just went away
            await shim.process.wait()
        assert shim.process.returncode == 0
        await no_pending(aegisd)
    assert withdrawn(aegisd, "stdin-closed")


# ---- protocol eras -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_both_protocol_eras(aegisd: AegisdProcess, mode: Literal["legacy", "auto"]) -> None:
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    with trio.fail_after(TIMEOUT):
        async with Client(shim_params(aegisd.socket), mode=mode) as client:
            version = client.protocol_version
            names = {t.name for t in (await client.list_tools()).tools}
            read = await client.call_tool("t_read", {})
            approved = await client.call_tool(
                "t_delete",
                {"repo": f"era-{mode}", "outcome": "approve"},
                progress_callback=on_progress,
            )
            denied = await client.call_tool("t_delete", {"repo": "era", "outcome": "deny"})
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert names == POLICY_TOOLS
    assert read.structured_content is not None and read.structured_content["status"] == 200
    assert approved.structured_content is not None and approved.structured_content["status"] == 204
    assert messages and messages[0].startswith(f"Approve on your phone: Delete era-{mode} approve")
    assert error_code(denied) == "approval_denied"


# ---- the daemon down -----------------------------------------------------------------------


@pytest.fixture
def later_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    """A configured but not yet started aegisd (the test starts and stops it)."""
    directory = private_dir()
    config = directory / "aegisd.toml"
    config.write_text(policy_toml(directory, upstream.url))
    process = AegisdProcess(directory, config)
    yield process
    cleanup(process)


async def test_daemon_down_at_start_and_per_call(later_aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_client(shim_params(later_aegisd.socket)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()  # starts and answers without the daemon
                (status,) = (await session.list_tools()).tools
                assert status.name == "aegis_status"
                assert "daemon_unavailable" in (status.description or "")
                down = await session.call_tool("aegis_status", {})
                call = await session.call_tool("t_read", {})
                assert error_code(down) == "daemon_unavailable"
                assert error_code(call) == "daemon_unavailable"
                assert "start it with `aegisd`" in text_of(down)

                await trio.to_thread.run_sync(later_aegisd.start)
                up = await session.call_tool("aegis_status", {})
                assert not up.is_error and "t_read" in text_of(up)
                assert {t.name for t in (await session.list_tools()).tools} == POLICY_TOOLS
                assert not (await session.call_tool("t_read", {})).is_error

                await trio.to_thread.run_sync(later_aegisd.stop)
                gone = await session.call_tool("t_read", {})
                assert error_code(gone) == "daemon_unavailable"


@pytest.fixture
def stranger_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream, caller_exe="/nonexistent/python")
    yield process
    cleanup(process)


async def test_a_shim_without_a_caller_rule_says_so(stranger_aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with Client(shim_params(stranger_aegisd.socket), mode="legacy") as client:
            (status,) = (await client.list_tools()).tools
            result = await client.call_tool("aegis_status", {})
            call = await client.call_tool("t_read", {})
    assert status.name == "aegis_status" and "peer_rejected" in (status.description or "")
    assert error_code(result) == "peer_rejected"
    assert error_code(call) == "peer_rejected"


# ---- secret hygiene ------------------------------------------------------------------------


def _proc_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().replace(b"\0", b"\n").decode("utf-8", "replace")
    except OSError:
        return ""


@pytest.fixture
def hygiene_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream)
    yield process
    cleanup(process)


async def test_no_credential_reaches_the_shim(
    hygiene_aegisd: AegisdProcess, upstream: Upstream
) -> None:
    aegisd = hygiene_aegisd
    command = [str(SHIM), "--socket", str(aegisd.socket), "--log-level", "debug"]
    environ = cmdline = ""
    results: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        async with raw_shim(command, shim_env()) as shim:
            await shim.initialize()
            rid = await shim.request("tools/list", {})
            await shim.response(rid)
            for repo in ("hygiene-1", "hygiene-2"):
                rid = await shim.request(
                    "tools/call",
                    {
                        "name": "t_delete",
                        "arguments": {"repo": repo, "outcome": "approve"},
                        "_meta": {"progressToken": repo},
                    },
                )
                results.append(await shim.response(rid))
            environ = _proc_text(shim.process.pid, "environ")
            cmdline = _proc_text(shim.process.pid, "cmdline")
    tokens = aegisd.issued()
    assert len(tokens) == 2
    # the credentials were real and used: the API received them from the daemon
    sent = {s.headers.get("authorization", "") for s in upstream.seen}
    assert all(f"Bearer {t}" in sent for t in tokens)
    assert all(r["result"]["structuredContent"]["status"] == 204 for r in results)
    assert environ and cmdline  # the checks below looked at something
    output = bytes(shim.out) + bytes(shim.err)
    for token in tokens:
        assert token.encode() not in output
        assert token not in environ and token not in cmdline
        assert token[-16:].encode() not in output  # not even a recognisable piece
    assert b"aegis-test-secret" not in output


def test_shim_has_no_secret_environment() -> None:
    """What we hand the shim: its documented host config needs no secret at all."""
    env = shim_env()
    assert set(env) == {"PATH", "HOME"}
    assert shutil.which("aegis-mcp", path=str(SHIM.parent)) == str(SHIM)
    assert os.access(SHIM, os.X_OK)

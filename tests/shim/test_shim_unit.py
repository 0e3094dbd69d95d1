"""The shim's pure parts (tool planning, result shapes) and its server in-process.

The in-process tests use the SDK's ``Client(server)`` against ``Shim.build_server()`` with the
real scripted aegisd behind it, so they exercise the handlers without a subprocess.
"""

from __future__ import annotations

import base64

import pytest
import trio
from mcp import Client

from aegisd import wire
from aegisd.client import AegisClient
from aegisd.errors import InvalidParams, RateLimited
from aegisd.host_schema import STATUS_TOOL, param_schema, tool_name
from aegisd.mcp_results import error_result, pending_result, proxy_result
from aegisd.mcp_shim.claims import ClaimBook, claim_key
from aegisd.mcp_shim.server import Shim
from aegisd.mcp_shim.tools import plan_tools, split_arguments
from tests.sdk.harness import AegisdProcess

from .conftest import SHIM, shim_env
from .rawmcp import raw_shim

TIMEOUT = 20


def info(name: str, **kw: object) -> wire.ActionInfo:
    return wire.ActionInfo(name=name, **kw)  # type: ignore[arg-type]


def test_tool_names() -> None:
    assert tool_name("github.delete_repo") == "github_delete_repo"
    assert tool_name("a.b-c_d") == "a_b-c_d"
    assert tool_name("x" * 100) == "x" * 64


def test_plan_tools_skips_token_and_denied_and_never_renames() -> None:
    tools = plan_tools(
        [
            info("gh.read", approval="none"),
            info("gh_read", approval="none"),  # policy check refuses this pair
            info("gh.token", delivery="token"),
            info("gh.never", approval="deny"),
            info("aegis.status", approval="none"),
        ]
    )
    # the first by name keeps the tool name; a clash is never renamed with a suffix
    assert {name: t.action.name for name, t in tools.items()} == {"gh_read": "gh.read"}
    assert STATUS_TOOL not in tools


def test_tool_description_and_schema() -> None:
    (tool,) = plan_tools([info("a.b", approval="ciba", description="Do b")]).values()
    assert tool.description().startswith("Do b (needs the person's approval")
    assert "approval_pending" in tool.description()
    assert tool.input_schema() == {"type": "object", "properties": {}}
    (bare,) = plan_tools([info("c", approval="none")]).values()
    assert bare.description() == "aegisd action c"


def test_proxy_result_shapes() -> None:
    ok = proxy_result(200, {"content-type": "application/json"}, b'{"a": 1}')
    assert not ok.is_error and ok.structured_content == {
        "status": 200,
        "headers": {"content-type": "application/json"},
        "body": {"a": 1},
    }
    broken = proxy_result(200, {"content-type": "application/json"}, b"{nope")
    assert broken.structured_content is not None and broken.structured_content["body"] == "{nope"
    vendor = proxy_result(200, {"content-type": "application/vnd.x+json"}, b"[1]")
    assert vendor.structured_content is not None and vendor.structured_content["body"] == [1]
    blob = proxy_result(200, {}, b"\xff\x00")
    assert blob.structured_content is not None
    assert base64.b64decode(str(blob.structured_content["body_base64"])) == b"\xff\x00"
    empty = proxy_result(204, {}, b"")
    assert [getattr(c, "text", "") for c in empty.content] == ["HTTP 204 (empty response)"]
    failed = proxy_result(500, {"content-type": "text/plain"}, b"oops")
    assert failed.is_error and failed.structured_content is not None
    assert failed.structured_content["error"] == {
        "code": "upstream_error",
        "message": "the API answered HTTP 500",
    }
    assert failed.structured_content["body"] == "oops"


def test_error_result_shape() -> None:
    result = error_result(RateLimited("slow down", retry_after=2.5))
    assert result.is_error
    assert result.structured_content == {
        "error": {"code": "rate_limited", "message": "slow down", "retry_after": 2.5}
    }
    assert [getattr(c, "text", "") for c in result.content] == ["rate_limited: slow down"]


def test_split_arguments() -> None:
    digits = param_schema("^[0-9]+$")
    schema = {"properties": {"n": digits, "s": param_schema("^[a-z]+$")}}
    with_body = info("n", body=True, params_schema=schema)
    assert split_arguments(with_body, {"body": {"k": [1]}, "n": 5, "s": "x", "c": None}) == (
        {"n": "5", "s": "x"},
        b'{"k": [1]}',
    )
    # without a body in the policy, "body" is an ordinary (and, here, unknown) parameter
    assert split_arguments(info("x"), {"body": "text"}) == ({"body": "text"}, None)
    # what the schema does not promise is refused: lists, booleans, floats, integers for a
    # string-only parameter, negative integers
    for value in ([1, 2], True, 1.5, -1):
        with pytest.raises(InvalidParams):
            split_arguments(with_body, {"n": value})
    with pytest.raises(InvalidParams):
        split_arguments(with_body, {"s": 5})


# ---- in process ----------------------------------------------------------------------------


async def test_keepalive_progress_while_pending(aegisd: AegisdProcess) -> None:
    shim = Shim(aegisd.socket, keepalive=0.05)
    messages: list[str] = []
    enough = trio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if len(messages) >= 3:
            enough.set()

    with trio.fail_after(TIMEOUT):
        async with Client(shim.build_server(), mode="legacy") as client:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    await client.call_tool(
                        "t_delete",
                        {"repo": "keepalive", "outcome": "hang"},
                        progress_callback=on_progress,
                    )

                nursery.start_soon(call)
                await enough.wait()
                nursery.cancel_scope.cancel()
    assert messages[0].startswith("Approve on your phone: Delete keepalive hang #")
    assert "expires in" in messages[1] and messages[1].startswith(messages[0])


async def test_in_process_listing_and_call(aegisd: AegisdProcess) -> None:
    shim = Shim(aegisd.socket)
    with trio.fail_after(TIMEOUT):
        async with Client(shim.build_server()) as client:  # mode="auto": the modern era
            names = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("t_get", {"name": "aegis-demo"})
    assert "t_get" in names and "t_token" not in names
    assert result.structured_content is not None
    assert result.structured_content["body"] == {"name": "aegis-demo"}


# ---- claims --------------------------------------------------------------------------------


def test_claims_are_per_call_random_and_bounded() -> None:
    book = ClaimBook(max_entries=2)
    a = claim_key("t_delete", {"repo": "a", "outcome": "x"})
    assert a == claim_key("t_delete", {"outcome": "x", "repo": "a"})  # canonical arguments
    assert a != claim_key("t_delete", {"repo": "b", "outcome": "x"})
    assert a != claim_key("t_other", {"repo": "a", "outcome": "x"})
    first = book.claim_for(a, now=100.0)
    assert len(first) == 32 and book.claim_for(a, now=101.0) == first
    book.pending_until(a, 160.0, "Delete a #1")
    assert book.claim_for(a, now=159.0) == first and book.binding_message(a) == "Delete a #1"
    assert book.claim_for(a, now=160.0) != first  # expired with its approval
    book.drop(a)
    assert book.claim_for(a, now=170.0) not in (first,)
    for i in range(5):
        book.claim_for(claim_key("t", {"i": i}), now=170.0)
    assert len(book) == 2


def test_pending_result_text() -> None:
    result = pending_result("Delete repo scratch #a1b2c3", 1074.4, 1.0, now=1000.0)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text == (
        "Waiting for the person's approval on their phone: Delete repo scratch #a1b2c3. The "
        "request stays valid for 74 s. Call this tool again with the same arguments to "
        "continue; do not change them."
    )
    assert result.structured_content == {
        "error": {
            "code": "approval_pending",
            "message": text,
            "retry_after": 1.0,
            "expires_at": 1074.4,
        }
    }


async def test_a_cancelled_call_leaves_a_line_on_stderr(aegisd: AegisdProcess) -> None:
    command = [str(SHIM), "--socket", str(aegisd.socket)]
    with trio.fail_after(TIMEOUT):
        async with raw_shim(command, shim_env()) as shim:
            await shim.initialize()
            rid = await shim.request(
                "tools/call",
                {
                    "name": "t_delete",
                    "arguments": {"repo": "cancelled", "outcome": "hang"},
                    "_meta": {"progressToken": "c1"},
                },
            )
            await shim.wait_for(lambda m: m.get("method") == "notifications/progress")
            await shim.send(
                {
                    "method": "notifications/cancelled",
                    "params": {"requestId": rid, "reason": "Request timed out"},
                }
            )
            while b"cancelled the call" not in shim.err:
                await trio.sleep(0.02)
    line = next(x for x in shim.err.decode().splitlines() if "cancelled the call" in x)
    assert "'t_delete'" in line and "while the approval was pending" in line


async def test_task_get_list_cancel_withdraws_on_the_daemon(aegisd: AegisdProcess) -> None:
    """The tasks/* methods the TypeScript test does not reach (its stream only gets and
    fetches the result): status while pending, listing, cancel, and unknown ids."""
    command = [str(SHIM), "--socket", str(aegisd.socket)]
    with trio.fail_after(TIMEOUT):
        async with raw_shim(command, shim_env()) as shim:
            init = await shim.initialize()
            assert init["result"]["capabilities"]["tasks"]["cancel"] == {}
            rid = await shim.request(
                "tools/call",
                {
                    "name": "t_delete",
                    "arguments": {"repo": "task-cancel", "outcome": "hang"},
                    "task": {"ttl": 1000},
                },
            )
            task = (await shim.response(rid))["result"]["task"]
            assert task["status"] == "working" and task["ttl"] >= 600_000  # outlives approvals
            while True:
                rid = await shim.request("tasks/get", {"taskId": task["taskId"]})
                got = (await shim.response(rid))["result"]
                if got.get("statusMessage"):
                    break
                await trio.sleep(0.05)
            assert got["statusMessage"].startswith(
                "Waiting for the person's approval on their phone: Delete task-cancel hang #"
            )
            rid = await shim.request("tasks/list", {})
            listed = (await shim.response(rid))["result"]["tasks"]
            assert [t["taskId"] for t in listed] == [task["taskId"]]
            rid = await shim.request("tasks/cancel", {"taskId": task["taskId"]})
            assert (await shim.response(rid))["result"]["status"] == "cancelled"
            rid = await shim.request("tasks/result", {"taskId": task["taskId"]})
            assert "error" in await shim.response(rid)
            rid = await shim.request("tasks/get", {"taskId": "nope"})
            assert (await shim.response(rid))["error"]["code"] == -32602
            async with AegisClient(aegisd.socket) as c:
                while await c.pending():
                    await trio.sleep(0.02)
    assert any(
        e["event"] == "withdrawn" and e.get("action") == "t.delete" for e in aegisd.audit_events()
    )

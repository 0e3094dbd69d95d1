"""aegis-mcp under the official TypeScript SDK client, as hosts built on it use it.

The client keeps its default 60 s request timeout and does not reset it on progress; the
shim runs with ``--max-wait 1`` so the "host gave up first" case takes a second, not a
minute. ajv (JSON Schema 2020-12, strict) compiles every schema the shim lists. The dev
tenant (poll interval 0.1 s) stands in for Auth0 and the phone, and counts pushes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.sdk.devstack import DevStack, dev_stack
from tests.sdk.harness import AegisdProcess, Upstream, cleanup, start_aegisd

from .tshost import npm_dir, ts_host

TIMEOUT = 40

RICH = """
[actions."t.issue"]
description = "Close an issue"
title = "Close issue"
approval = "none"
params = {{ number = "^[0-9]{{1,6}}$" }}
annotations = {{ destructive = false, idempotent = true }}
request = {{ method = "PATCH", url = "{url}/issues/{{number}}" }}
"""


@pytest.fixture(autouse=True)
def npm() -> Path:
    """The JavaScript clients' folder; skips every test here when it is not installed."""
    return npm_dir()


@pytest.fixture(scope="module")
def rich_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream, extra=RICH.format(url=upstream.url))
    yield process
    cleanup(process)


async def pushes(stack: DevStack) -> int:
    async with httpx.AsyncClient(base_url=stack.base, timeout=10) as http:
        count: int = (await http.get("_dev/stats")).json()["bc_authorize_ok"]
    return count


async def test_every_schema_compiles_and_hints_are_truthful(rich_aegisd: AegisdProcess) -> None:
    samples = [
        ["t_get", {"name": "scratch"}],
        ["t_get", {"name": "../etc"}],
        ["t_get", {"name": "scratch", "extra": "x"}],
        ["t_issue", {"number": 42}],
        ["t_issue", {"number": "42"}],
        ["t_issue", {"number": "4x"}],
        ["t_issue", {"number": -1}],
    ]
    with trio.fail_after(TIMEOUT):
        async with ts_host("schemas", rich_aegisd.socket, json.dumps(samples)) as host:
            connected = await host.line()
            report = await host.until("schemas")
    assert connected["capabilities"]["tasks"]["requests"]["tools"]["call"] == {}
    assert connected["capabilities"]["tools"]["listChanged"] is True
    tools: dict[str, dict[str, Any]] = {t["name"]: t for t in report["tools"]}
    bad = {n: t for n, t in tools.items() if t.get("input") != "ok" or t.get("output") != "ok"}
    assert not bad, json.dumps(bad)[:3000]
    assert report["verdicts"] == [True, False, False, True, True, False, False]
    read, delete, issue = tools["t_read"], tools["t_delete"], tools["t_issue"]
    assert read["title"] == "t.read" and issue["title"] == "Close issue"
    assert read["annotations"] == {
        "title": "t.read",
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": True,
    }
    # a DELETE behind an approval: destructive, idempotent, and it may run as a task
    assert delete["annotations"]["readOnlyHint"] is False
    assert delete["annotations"]["destructiveHint"] is True
    assert delete["annotations"]["idempotentHint"] is True
    assert delete["execution"] == {"taskSupport": "optional"} and "execution" not in read
    # the policy's own hints win over what PATCH suggests
    assert issue["annotations"]["destructiveHint"] is False
    assert issue["annotations"]["idempotentHint"] is True
    assert tools["t_note"]["annotations"]["destructiveHint"] is True  # POST
    assert tools["t_note"]["annotations"]["idempotentHint"] is False


async def test_an_approval_after_the_wait_completes_with_a_repeated_call() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(interval=0.1) as stack:
            args = json.dumps({"repo": "scratch"})
            async with ts_host(
                "repeat", stack.aegisd.socket, "demo_delete", args, shim_args=("--max-wait", "1")
            ) as host:
                await host.line()
                first = (await host.until("result"))["result"]
                await stack.answer("Delete repo scratch")  # the person answers late
                await host.go()
                second = await host.until("result")
            count = await pushes(stack)
            events = [e["event"] for e in stack.aegisd.audit_events()]
    assert first["isError"] is True
    error = first["structuredContent"]["error"]
    assert error["code"] == "approval_pending"
    assert error["retry_after"] > 0 and error["expires_at"] > 0
    text = first["content"][0]["text"]
    assert text.startswith(
        "Waiting for the person's approval on their phone: Delete repo scratch #"
    )
    assert "The request stays valid for " in text and "with the same arguments" in text
    result = second["result"]
    assert result["isError"] is False, result
    assert result["structuredContent"]["body"] == {"deleted": "scratch", "by": "auth0|aegis-demo"}
    assert second["ms"] < 5000  # approved in between: the answer comes at once
    assert count == 1  # exactly one push
    assert "reattached" in events


async def test_the_tasks_path_waits_past_max_wait_without_a_second_call() -> None:
    with trio.fail_after(TIMEOUT):
        async with dev_stack(interval=0.1) as stack:
            args = json.dumps({"repo": "aegis-demo"})
            async with ts_host(
                "task", stack.aegisd.socket, "demo_delete", args, shim_args=("--max-wait", "1")
            ) as host:
                await host.line()
                created = await host.until("taskCreated")
                while True:
                    status = await host.until("taskStatus")
                    if "approval" in (status["task"].get("statusMessage") or ""):
                        break
                await trio.sleep(1.5)  # longer than --max-wait: a task is not bound by it
                await stack.answer("Delete repo aegis-demo")
                done = await host.until("result")
            count = await pushes(stack)
    assert created["task"]["status"] == "working" and created["task"]["pollInterval"] > 0
    assert status["task"]["statusMessage"].startswith(
        "Waiting for the person's approval on their phone: Delete repo aegis-demo #"
    )
    result = done["result"]
    assert result["isError"] is False, result
    assert result["structuredContent"]["body"]["deleted"] == "aegis-demo"
    assert (
        result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"]
        == (created["task"]["taskId"])
    )
    assert count == 1


async def test_a_host_timeout_leaves_lines_on_the_shims_stderr(aegisd: AegisdProcess) -> None:
    args = json.dumps({"repo": "timed-out", "outcome": "hang"})
    with trio.fail_after(TIMEOUT):
        async with ts_host(
            "timeout", aegisd.socket, "t_delete", args, shim_args=("--max-wait", "30")
        ) as host:
            await host.line()
            timed_out = await host.until("timed_out")
            while b"Request timed out" not in host.err:
                await trio.sleep(0.02)
            await host.go()
    assert timed_out["code"] == -32001
    err = host.err.decode()
    assert "'t_delete': the client cancelled the call after" in err
    assert "while the approval was pending" in err
    assert "the client cancelled request" in err and "Request timed out" in err

"""Spawn → ``initialize`` reply: ``aegis-mcp`` against a bare MCP SDK server (target <= 1.15x).

Each variant is a fresh process; a raw client writes the ``initialize`` request the moment the
process is spawned and times the reply. Variants run interleaved (round robin) so machine
noise hits them alike, and the ratio of medians is the figure DESIGN §6 sets a target for.

Variants:
- ``bare``: the reference, a low-level ``mcp.server.Server`` with one tool, served on trio
  (``trio.run`` + ``stdio_server``), i.e. the SDK and runtime aegis-mcp itself uses;
- ``aegis-mcp``: the real console script with a running ``aegisd`` behind it (the shim asks
  it for the actions in the background while answering ``initialize``);
- ``aegis-mcp (daemon down)``: the same with nothing listening on the socket;
- ``MCPServer``: the SDK's high-level server on trio, for context only.

Usage: ``.venv/bin/python bench/shim_start.py [--runs N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemonproc import DaemonProc
from report import Result, percentile

BIN = Path(sys.executable).parent
SHIM = BIN / "aegis-mcp"
TARGET = 1.15

BARE = """
import trio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[types.Tool(name="echo", description="Echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}})])

async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text="hi")])

async def main():
    server = Server("bare", version="0", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

trio.run(main)
"""

HIGH_LEVEL = """
import trio
from mcp.server.mcpserver import MCPServer

srv = MCPServer("bare-hl", version="0")

@srv.tool()
async def echo(text: str) -> str:
    return text

trio.run(srv.run_stdio_async)
"""

INITIALIZE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        }
    ).encode()
    + b"\n"
)


def time_to_initialize(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to the complete ``initialize`` reply line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(INITIALIZE)
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{argv[0]} exited before answering initialize")
            if json.loads(line).get("id") == 1:
                elapsed = time.perf_counter() - t0
                break
    finally:
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return elapsed


def daemon_config(directory: Path) -> tuple[Path, Path]:
    socket = directory / "run" / "aegisd.sock"
    config = directory / "aegisd.toml"
    exe = os.path.realpath(sys.executable)
    config.write_text(
        f"""
[daemon]
socket = "{socket}"
audit_log = "{directory}/audit.jsonl"

[[callers]]
name = "bench"
exe = ["{exe}"]
actions = ["bench.*"]

[actions."bench.read"]
description = "A read that needs no approval (never called by this bench)"
approval = "none"
request = {{ method = "GET", url = "http://127.0.0.1:9/repos" }}
"""
    )
    return config, socket


def main() -> None:
    parser = argparse.ArgumentParser(description="aegis-mcp start-up vs a bare MCP server.")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="aeg-bench-", dir="/tmp"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)}
    config, socket = daemon_config(directory)
    try:
        daemon = DaemonProc(config, socket)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    variants: dict[str, list[str]] = {
        "bare": [sys.executable, "-c", BARE],
        "aegis-mcp": [str(SHIM), "--socket", str(socket)],
        "aegis-mcp (daemon down)": [str(SHIM), "--socket", str(directory / "none.sock")],
        "MCPServer": [sys.executable, "-c", HIGH_LEVEL],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for argv in variants.values():  # warm the bytecode caches once
            time_to_initialize(argv, env)
        for _ in range(args.runs):
            for name, argv in variants.items():
                times[name].append(time_to_initialize(argv, env))
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)

    p50 = {name: percentile(values, 50) * 1000 for name, values in times.items()}
    ratio = p50["aegis-mcp"] / p50["bare"]
    ratio_down = p50["aegis-mcp (daemon down)"] / p50["bare"]
    print(f"spawn → initialize reply, {args.runs} interleaved runs per variant (ms):")
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(f"  {name:<24} p50 {p50[name]:6.0f}   min {ms[0]:6.0f}   max {ms[-1]:6.0f}")
    result = Result("shim_start", extra={"runs": args.runs, "p50_ms": p50})
    result.add("bare_sdk_server_p50", round(p50["bare"], 1), "ms", note="low-level Server, trio")
    result.add("aegis_mcp_p50", round(p50["aegis-mcp"], 1), "ms")
    result.add(
        "aegis_mcp_vs_bare",
        round(ratio, 3),
        "x",
        target=f"<= {TARGET}x",
        met=ratio <= TARGET,
    )
    result.add(
        "aegis_mcp_daemon_down_vs_bare",
        round(ratio_down, 3),
        "x",
        target=f"<= {TARGET}x",
        met=ratio_down <= TARGET,
    )
    result.add("mcpserver_p50", round(p50["MCPServer"], 1), "ms", note="context only")
    result.emit()


if __name__ == "__main__":
    main()

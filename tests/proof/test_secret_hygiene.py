"""Secret hygiene after a full end-to-end run: no issued secret or token appears anywhere.

Everything runs as real processes: the dev tenant (``bench/tenantproc.py``, auto-approving
each push after 300 ms), ``aegisd`` (log level ``debug``, so the most talkative logs are
scanned), ``aegis-mcp`` driven by the official MCP SDK client over stdio, the SDK in this
process, and ``aegisctl``. The run covers a no-approval proxy call, a CIBA approval with the
token delivered to the caller, a CIBA approval with Token Vault and a proxied DELETE, and the
same two proxy actions through the shim.

Then every value the tenant ever issued (``issued_secrets()``: client secrets, ID, access,
refresh and Management API tokens, provider tokens; for JWTs also their signature segment
alone) is searched, as exact text, in:

* every regular file under the run's directory: the daemon's audit log and config, the
  tenant's ``aegisd.toml``, every captured stdout/stderr (daemon, tenant, shim);
* the output of ``aegisctl status``, ``pending``, ``audit tail --json`` and ``audit verify``;
* every MCP result the agent saw (what a model would read);
* ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` of the daemon, the shim and the tenant.

Stated exceptions, each asserted as narrowly as possible:

* the dev tenant's own state files whose job is to hold secrets: ``t/secrets.env`` (the
  ``AEGIS_SECRET_*`` lines it writes for the daemon), ``t/clients.toml``, ``t/users.toml``
  (provider tokens of its demo users) and ``t/signing-key.pem``;
* the daemon's own environment with ``[secrets] backend = "env"`` (the dev/test-only
  backend) holds ``AEGIS_SECRET_AUTH0_CLIENT_SECRET`` and
  ``AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET``, and nothing else secret; the shim's environment
  never holds any of it;
* the token delivered to this test process by ``authorize`` lives in this process (it is the
  caller); it must not appear anywhere else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest
import trio

from aegisd.client import AegisClient, Credentials
from tests.corekit import run_ctl

from .kit import BENCH_ACTION, sub_stack

ROOT = Path(__file__).resolve().parents[2]
SHIM = Path(sys.executable).with_name("aegis-mcp")
TENANT_SECRET_FILES = {"secrets.env", "clients.toml", "users.toml", "signing-key.pem"}
DAEMON_SECRET_ENV = {"AEGIS_SECRET_AUTH0_CLIENT_SECRET", "AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET"}


def _needles(secrets: Iterable[str]) -> dict[str, str]:
    """Search strings: each value, and the signature segment of each JWT."""
    out: dict[str, str] = {}
    for value in secrets:
        if len(value) < 12:
            continue
        out[value] = value
        parts = value.split(".")
        if len(parts) == 3 and len(parts[2]) >= 20:
            out[parts[2]] = value
    return out


def _find(text: str, needles: dict[str, str]) -> list[str]:
    return sorted({f"{needle[:6]}…({len(needle)} chars)" for needle in needles if needle in text})


def _proc_text(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace")


def _environ(pid: int) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _proc_text(pid, "environ").splitlines() if "=" in line)
    return dict(pairs)


async def test_no_issued_secret_appears_in_any_file_log_output_or_process() -> None:
    with (
        trio.fail_after(150),
        sub_stack(
            {"auto_approve_ms": 300},
            daemon={"log_level": "debug", "ciba_starts_per_minute": 100},
            extra=BENCH_ACTION,
        ) as s,
    ):
        daemon = await trio.to_thread.run_sync(s.start_daemon)
        procs: dict[str, int] = {"daemon": daemon.pid, "tenant": s.tenant.pid}
        seen: dict[str, str] = {}  # what callers, the agent and the operator were shown
        proc_snapshots: dict[str, tuple[str, dict[str, str]]] = {}

        def snapshot(name: str, pid: int) -> None:
            proc_snapshots[name] = (_proc_text(pid, "cmdline"), _environ(pid))

        snapshot("daemon", daemon.pid)
        snapshot("tenant", s.tenant.pid)

        # 1. the SDK: no approval, token delivery, Token Vault + proxy
        async with AegisClient(s.files.socket) as client:
            read = await client.proxy("demo.read")
            seen["sdk demo.read"] = read.text()
            creds = await client.authorize("demo.token")
            assert isinstance(creds, Credentials) and creds.access_token
            seen["sdk credentials repr"] = repr(creds)
            delete = await client.proxy("demo.delete", repo="old-experiments")
            seen["sdk demo.delete"] = f"{delete.status} {delete.text()}"
            assert delete.status == 200, seen["sdk demo.delete"]
            token_from_sdk = creds.access_token
            del creds

        # 2. the shim, driven by the MCP SDK client over stdio
        shim_ran = SHIM.exists()
        if shim_ran:
            from mcp import ClientSession, StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=str(SHIM),
                args=["--socket", str(s.files.socket)],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(s.root)},
            )
            shim_err = s.root / "shim.stderr"
            with open(shim_err, "w") as errlog:
                async with (
                    stdio_client(params, errlog=errlog) as (r, w),
                    ClientSession(r, w) as session,
                ):
                    await session.initialize()
                    tools = await session.list_tools()
                    seen["mcp tools"] = tools.model_dump_json()
                    shim = [
                        p
                        for p in psutil.Process().children(recursive=True)
                        if any("aegis-mcp" in part for part in p.cmdline())
                    ]
                    assert len(shim) == 1, shim
                    procs["shim"] = shim[0].pid
                    snapshot("shim", shim[0].pid)
                    for name, args in (("demo_read", {}), ("demo_delete", {"repo": "scratch"})):
                        result = await session.call_tool(name, args)
                        seen[f"mcp {name}"] = result.model_dump_json()
                        assert not getattr(result, "is_error", False), seen[f"mcp {name}"]

        # 3. the operator's view
        for args in (("status",), ("pending",), ("audit", "tail", "--json"), ("audit", "verify")):
            done = await trio.to_thread.run_sync(lambda a=args: run_ctl(s.files, *a))
            seen["aegisctl " + " ".join(args)] = done.stdout + done.stderr
            assert done.returncode == 0, done.stdout + done.stderr

        issued = (await s.tenant.acall("secrets"))["secrets"]
        assert token_from_sdk in issued
        await trio.to_thread.run_sync(daemon.stop)  # flush and close everything it writes
        await trio.to_thread.run_sync(s.tenant.close)

        # ---- the scan ------------------------------------------------------------------
        needles = _needles(issued)
        assert len(needles) >= 6, "the run should have issued secrets and several tokens"
        leaks: dict[str, list[str]] = {}
        scanned: list[str] = []
        for path in sorted(s.root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(s.root)
            if rel.parts[0] == "t" and path.name in TENANT_SECRET_FILES:
                continue  # the tenant's own secret store (stated exception)
            scanned.append(str(rel))
            found = _find(path.read_bytes().decode("utf-8", "replace"), needles)
            if found:
                leaks[f"file {rel}"] = found
        for what, text in seen.items():
            if found := _find(text, needles):
                leaks[what] = found
        for name, (cmdline, env) in proc_snapshots.items():
            if found := _find(cmdline, needles):
                leaks[f"{name} cmdline"] = found
            for key, value in env.items():
                if name == "daemon" and key in DAEMON_SECRET_ENV:
                    continue  # the env backend's own variables (stated exception)
                if found := _find(f"{key}={value}", needles):
                    leaks[f"{name} environ {key}"] = found

        # what the stated exceptions may hold, and no more
        daemon_env = proc_snapshots["daemon"][1]
        client_secrets = {v for k, v in s.env.items() if k in DAEMON_SECRET_ENV}
        assert {daemon_env.get(k) for k in DAEMON_SECRET_ENV} == client_secrets
        if shim_ran:
            shim_env = proc_snapshots["shim"][1]
            assert not DAEMON_SECRET_ENV & set(shim_env)
            assert not any(k.startswith("AEGIS_SECRET") for k in shim_env)

    assert {"audit.jsonl", "aegisd-0.stderr", "tenant.stderr"} <= {Path(p).name for p in scanned}, (
        scanned
    )
    assert not leaks, leaks
    if not shim_ran:
        pytest.skip("the aegis-mcp console script is not installed: shim part skipped")

"""``aegisctl dev-tenant`` as a person runs it: a subprocess that writes the state dir, serves,
answers ``approve --latest`` and ``deny ID``, and exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from aegisctl.devtenant import dev_tenant
from click.testing import CliRunner

from aegisd.config import parse_config

from .helpers import CIBA_GRANT

CLI = [sys.executable, "-c", "from aegisctl.main import main; main()"]


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


async def _aegisctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_dev_tenant_subprocess_state_dir_approve_deny_and_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [*CLI, "dev-tenant", "--port", "0", "--state-dir", str(state), "--interval", "0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = await _read_line(proc.stdout)
            match = re.search(r"issuer=(http://127\.0\.0\.1:(\d+)/) phone=(\S+)", line)
            assert match, line
            issuer, port = match.group(1), match.group(2)
            assert match.group(3) == issuer
            # written before serving, and usable as is
            cfg = parse_config((state / "aegisd.toml").read_bytes())
            assert cfg.auth0 is not None and cfg.auth0.issuer == issuer
            secrets_env = state / "secrets.env"
            assert stat.S_IMODE(secrets_env.stat().st_mode) == 0o600
            env = dict(row.split("=", 1) for row in secrets_env.read_text().splitlines())
            creds = {
                "client_id": cfg.auth0.client_id,
                "client_secret": env["AEGIS_SECRET_AUTH0_CLIENT_SECRET"],
            }
            hint = f'{{"format":"iss_sub","iss":"{issuer}","sub":"{cfg.auth0.user_id}"}}'
            async with httpx.AsyncClient(base_url=issuer) as c:
                ids = []
                for message in ("First push", "Second push"):
                    resp = await c.post(
                        "bc-authorize",
                        data={
                            **creds,
                            "scope": "openid",
                            "login_hint": hint,
                            "binding_message": message,
                        },
                    )
                    ids.append(resp.json()["auth_req_id"])
                approved = await _aegisctl("dev-tenant", "approve", "--port", port, "--latest")
                denied = await _aegisctl("dev-tenant", "deny", "--port", port, ids[0])
                again = await _aegisctl("dev-tenant", "deny", "--port", port, ids[0])
                first, second = [
                    (
                        await c.post(
                            "oauth/token",
                            data={**creds, "grant_type": CIBA_GRANT, "auth_req_id": rid},
                        )
                    ).json()
                    for rid in ids
                ]
            proc.send_signal(signal.SIGTERM)
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.decode().startswith("approved ")
    assert denied.returncode == 0 and denied.stdout.decode().startswith("denied ")
    assert again.returncode == 17 and b"no pending request" in again.stderr  # not_found
    assert first["error"] == "access_denied"
    assert "id_token" in second  # --latest picked the newest push
    assert rc == 0


def test_approve_needs_latest_or_an_id_and_a_reachable_tenant() -> None:
    runner = CliRunner()
    neither = runner.invoke(dev_tenant, ["approve", "--port", "1"])
    both = runner.invoke(dev_tenant, ["deny", "--port", "1", "--latest", "abc"])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    unreachable = runner.invoke(dev_tenant, ["approve", "--port", str(closed_port), "--latest"])
    assert neither.exit_code == 2 and both.exit_code == 2
    assert unreachable.exit_code == 1
    assert "cannot reach the dev tenant" in unreachable.output

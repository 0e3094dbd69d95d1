"""``aegisctl demo``: the whole chain on this machine, no Auth0 account needed.

Owns the demo's choreography: a temporary directory, the dev tenant and aegisd as real
subprocesses, a real MCP client (the official SDK over stdio) driving ``aegis-mcp``, one
read-only call and one call that needs approval (the phone page URL on a terminal, automatic
approval otherwise), then ``status``, the audit tail and ``audit verify``, and a cleanup that
leaves no process or file behind. It acts outside the daemon (starts processes, writes a temp
dir) and never touches the user's real config, socket or keyring.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import click
import trio

_READY_TIMEOUT = 20.0


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _say(text: str = "", *, bold: bool = False) -> None:
    click.echo(click.style(text, bold=True) if bold else text)


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is always terminated (SIGTERM, then SIGKILL) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(predicate: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + _READY_TIMEOUT
    while not predicate():
        if proc.poll() is not None:
            raise click.ClickException(
                f"{what} exited early (code {proc.returncode}):\n{log.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise click.ClickException(f"{what} did not become ready in {_READY_TIMEOUT:.0f} s")
        time.sleep(0.05)


def _secrets_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


_REFUSALS: Final = {
    "approval_denied": "denied on the phone",
    "approval_expired": "nobody answered before the push expired",
}


def _refusal(result: object) -> str | None:
    """The person's "no" (or silence): a correct outcome of the demo, not a failed step."""
    structured = getattr(result, "structured_content", None) or {}
    error = structured.get("error") if isinstance(structured, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return _REFUSALS.get(code) if isinstance(code, str) else None


async def _drive_shim(
    socket: Path, repo: str, interactive: bool, phone_url: str, expiry: int, port: int, deny: bool
) -> int:
    """A real MCP client session against aegis-mcp; returns the number of failed steps."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=_bin("aegis-mcp"),
        args=["--socket", str(socket)],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")},
    )
    failures = 0
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        names = [t.name for t in tools]
        _say(f"MCP tools offered by aegis-mcp: {', '.join(names)}", bold=True)
        read_tool = next((n for n in names if n.endswith("read")), None)
        delete_tool = next((n for n in names if n.endswith("delete")), None)
        if read_tool is None or delete_tool is None:
            raise click.ClickException(f"the demo tools are missing from {names}")

        _say(f"\n1) {read_tool}: no approval needed, the daemon makes the request", bold=True)
        result = await session.call_tool(read_tool, {})
        _say(_render(result))
        failures += bool(result.is_error)

        _say(f"\n2) {delete_tool} repo={repo}: needs your approval", bold=True)
        if interactive:
            _say(f"   Open the phone page and press Approve (or Deny): {phone_url}")
            _say(f"   The push stays valid for {expiry} s. From a second terminal instead:")
            _say(f"     aegisctl dev-tenant approve --port {port} --latest   (or deny)")
        elif deny:
            _say(f"   (--auto --deny: denying it as a second terminal would; {expiry} s valid)")
        else:
            _say("   (not on a terminal: the dev tenant approves automatically in a moment)")
        answered = False

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            nonlocal answered
            if message:
                _say(f"   … {message}")
            if deny and not answered:
                answered = True
                argv = [_bin("aegisctl"), "dev-tenant", "deny", "--port", str(port), "--latest"]
                _say(f"   $ aegisctl dev-tenant deny --port {port} --latest")
                await trio.run_process(argv, check=False)

        with trio.fail_after(300):
            while True:
                result = await session.call_tool(
                    delete_tool, {"repo": repo}, progress_callback=on_progress
                )
                error = (result.structured_content or {}).get("error") or {}
                if error.get("code") != "approval_pending":
                    break
                # what an agent does: the same call again re-attaches to the same push
                _say("   … still waiting for you (approval_pending): calling again")
        _say(_render(result))
        refused = _refusal(result)
        if refused is not None:
            _say(f"   -> {refused}: aegisd refused the action and {repo} was not deleted.")
            _say("      That is the correct outcome: nothing runs without your approval.")
        else:
            failures += bool(result.is_error)
    return failures


def _render(result: object) -> str:
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return "   " + json.dumps(structured, indent=2).replace("\n", "\n   ")
    content = getattr(result, "content", [])
    return "\n".join("   " + getattr(c, "text", str(c)) for c in content)


def _run_cli(args: list[str], socket: Path, config: Path) -> int:
    cmd = [_bin("aegisctl"), "--socket", str(socket), "--config", str(config), *args]
    return subprocess.run(cmd, check=False).returncode


@click.command()
@click.option(
    "--interactive/--auto",
    default=None,
    help="Wait for you to approve on the phone page (default when on a terminal), "
    "or approve automatically after a short delay.",
)
@click.option("--repo", default="old-experiments", show_default=True, help="Demo repo to delete.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (logs, audit).")
@click.option("--deny", is_flag=True, help="With --auto: deny the push instead, to see a refusal.")
def demo(interactive: bool | None, repo: str, keep: bool, deny: bool) -> None:
    """Run the dev tenant, aegisd and aegis-mcp, and walk one approval through.

    Starts processes and writes a temporary directory; touches nothing of your real setup.
    """
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aegis-demo-"))
    try:
        failures = _run(workdir, interactive, repo, deny and not interactive)
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        # one line, not trio's ExceptionGroup: the children were stopped on the way out
        click.echo("demo interrupted; everything stopped and cleaned up", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        if keep:
            _say(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    if failures:
        raise click.ClickException(f"demo finished with {failures} failed step(s)")
    _say(f"\ndemo complete in {elapsed:.1f} s; everything stopped and cleaned up", bold=True)


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, also when trio delivers it inside (nested) exception groups."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_interrupted(e) for e in exc.exceptions)
    return False


def _run(workdir: Path, interactive: bool, repo: str, deny: bool) -> int:
    """Every step; returns the number of failed ones. Children stop when it returns or raises."""
    state = workdir / "tenant"
    failures = 0
    with ExitStack() as stack:
        tenant_argv = [_bin("aegisctl"), "dev-tenant", "--port", "0", "--state-dir", str(state)]
        tenant_argv += ["--interval", "1"]
        if not interactive and not deny:
            tenant_argv += ["--auto-approve-ms", "1500"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        tenant_log = workdir / "dev-tenant.log"
        tenant = stack.enter_context(_process(tenant_argv, env, tenant_log))
        config = state / "aegisd.toml"
        secrets = state / "secrets.env"
        _wait_for(lambda: config.exists() and secrets.exists(), "dev tenant", tenant, tenant_log)
        from aegisd.config import load_config

        cfg = load_config(config)
        socket = cfg.socket_path()
        assert cfg.auth0 is not None and cfg.auth0.issuer is not None
        phone_url = cfg.auth0.issuer
        _wait_for(
            lambda: _http_ok(phone_url + ".well-known/openid-configuration"),
            "dev tenant",
            tenant,
            tenant_log,
        )
        _say(f"dev tenant: {cfg.auth0.issuer} (phone page {phone_url})", bold=True)

        # Only the daemon gets the dev tenant's secrets, through its environment
        # (backend "env", dev only); the shim and the client never see them.
        daemon_env = dict(env, **_secrets_env(secrets))
        daemon_log = workdir / "aegisd.log"
        daemon = stack.enter_context(
            _process([_bin("aegisd"), "--config", str(config)], daemon_env, daemon_log)
        )
        _wait_for(socket.exists, "aegisd", daemon, daemon_log)
        _say(f"aegisd: listening on {socket}", bold=True)

        port = urlsplit(phone_url).port or 0
        expiry = cfg.auth0.requested_expiry
        args = (socket, repo, interactive, phone_url, expiry, port, deny)
        failures += trio.run(_drive_shim, *args)

        _say("\n3) aegisctl status", bold=True)
        failures += _run_cli(["status"], socket, config) != 0
        _say("\n4) aegisctl audit tail", bold=True)
        _run_cli(["audit", "tail", "-n", "12"], socket, config)
        _say("\n5) aegisctl audit verify", bold=True)
        failures += _run_cli(["audit", "verify"], socket, config) != 0
    return failures


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False

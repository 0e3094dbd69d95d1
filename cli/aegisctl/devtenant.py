"""``aegisctl dev-tenant``: run the local Auth0-compatible dev tenant, and answer its pushes.

Owns the command line of the dev tenant: serving (until SIGTERM or SIGINT, exit 0, one ready
line on stdout with the issuer and the phone URL) and the ``approve``/``deny`` sub-commands,
which call the phone endpoints over HTTP on 127.0.0.1. This command acts outside the daemon's
socket; it never talks to aegisd. It must not print secrets: the client secrets go only into
``DIR/secrets.env`` (0600) when ``--state-dir`` is given.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import quote

import click
import httpx
import trio

from aegisctl.output import emit, json_option
from aegisctl.outputs import DevTenantAnswerOutput
from aegisd.devtenant import DevTenantOptions, serve_dev_tenant
from aegisd.errors import AlreadyRunning, NotFound

__all__ = ["dev_tenant"]


@click.group("dev-tenant", invoke_without_command=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port on 127.0.0.1 (0 picks a free one; the ready line shows it).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Persist keys and users here and write aegisd.toml and secrets.env.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="CIBA polling interval in seconds.",
)
@click.option(
    "--auto-approve-ms",
    type=click.IntRange(min=0),
    help="Approve every request this many milliseconds after it starts.",
)
@click.option(
    "--vault-refuses-opaque",
    is_flag=True,
    help="Token Vault refuses opaque CIBA tokens (forces the Management API fallback).",
)
@click.option("--quiet", is_flag=True, help="Do not log one line per request on stderr.")
@click.pass_context
def dev_tenant(
    ctx: click.Context,
    port: int,
    state_dir: Path | None,
    interval: float,
    auto_approve_ms: int | None,
    vault_refuses_opaque: bool,
    quiet: bool,
) -> None:
    """Run the local dev tenant (NOT a security boundary; loopback only).

    It serves discovery, JWKS, CIBA, Token Vault, a Management API, a demo API and a phone
    page at the issuer URL until SIGTERM or Ctrl-C. This command does not use the daemon's
    socket.
    """
    if ctx.invoked_subcommand is not None:
        return
    options = DevTenantOptions(
        port=port,
        state_dir=state_dir.absolute() if state_dir is not None else None,
        interval=interval,
        auto_approve_ms=auto_approve_ms,
        vault_refuses_opaque=vault_refuses_opaque,
    )
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    try:
        trio.run(_serve_until_signal, options)
    except (OSError, BaseExceptionGroup) as exc:
        inner = _sole(exc)
        if isinstance(inner, OSError) and inner.errno == errno.EADDRINUSE:
            raise AlreadyRunning(
                f"port {port} on 127.0.0.1 is already in use (another dev tenant?); "
                "choose another with --port, or --port 0 for a free one"
            ) from None
        raise


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside trio's (possibly nested) single-member groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _serve_until_signal(options: DevTenantOptions) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            tenant = await nursery.start(serve_dev_tenant, options)
            line = f"aegis dev tenant ready: issuer={tenant.issuer} phone={tenant.phone_url}"
            if options.state_dir is not None:
                line += f" config={options.state_dir / 'aegisd.toml'}"
            click.echo(line)
            sys.stdout.flush()
            async for _signum in signals:
                tenant.stop()
                break


def _answer(port: int, latest: bool, req_id: str | None, verb: str, as_json: bool) -> None:
    if latest == (req_id is not None):
        raise click.UsageError("give either --latest or a request ID")
    base = f"http://127.0.0.1:{port}/"
    headers = {"accept": "application/json"}
    try:
        with httpx.Client(base_url=base, timeout=10.0, headers=headers) as client:
            if latest:
                pending = client.get("phone/pending").raise_for_status().json()["pending"]
                if not pending:
                    raise NotFound("no pending request")
                newest = max(pending, key=lambda p: p["created_at"])
                req_id = str(newest["id"])
            assert req_id is not None
            resp = client.post(f"phone/{verb}/{quote(req_id, safe='')}")
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach the dev tenant at {base} ({type(exc).__name__})"
        ) from None
    if resp.status_code == 404:
        raise NotFound("no pending request has that ID (answered or expired?)")
    if resp.status_code != 200:
        raise click.ClickException(f"the dev tenant answered HTTP {resp.status_code}")
    status = str(resp.json().get("status", verb))
    if as_json:
        emit(DevTenantAnswerOutput(status=status, id=req_id))
        return
    click.echo(f"{status} {req_id[:8]}…")


_port_option = click.option(
    "--port", type=click.IntRange(1, 65535), required=True, help="The dev tenant's port."
)
_latest_option = click.option("--latest", is_flag=True, help="Answer the newest pending request.")


@dev_tenant.command("approve")
@_port_option
@_latest_option
@click.argument("req_id", required=False)
@json_option
def approve(port: int, latest: bool, req_id: str | None, as_json: bool) -> None:
    """Approve a pending push, as the person would on the phone."""
    _answer(port, latest, req_id, "approve", as_json)


@dev_tenant.command("deny")
@_port_option
@_latest_option
@click.argument("req_id", required=False)
@json_option
def deny(port: int, latest: bool, req_id: str | None, as_json: bool) -> None:
    """Deny a pending push, as the person would on the phone."""
    _answer(port, latest, req_id, "deny", as_json)

"""Running a dev tenant: bind loopback, write the state files, serve with Hypercorn on trio.

Owns ``serve_dev_tenant`` (trio's start protocol: ``tenant = await nursery.start(
serve_dev_tenant, options)`` returns a ``DevTenant`` once the socket listens), the ``DevTenant``
handle tests and the CLI use, ``open_dev_tenant`` for ``async with``, and the auto-approve
timers. It binds 127.0.0.1 only. Order at start: bind (so the port is known), load or create
state, write ``aegisd.toml``/``secrets.env`` when a state dir is set, then listen and report
ready. Cancelling the surrounding scope, or ``DevTenant.stop()``, ends it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast, final

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import Framework

from aegisd.devtenant.app import build_app
from aegisd.devtenant.ciba import CibaRequest, PendingRequest
from aegisd.devtenant.options import DevTenantOptions, Faults
from aegisd.devtenant.stateconfig import TenantFacts, write_state_config
from aegisd.devtenant.statedir import load_state
from aegisd.devtenant.stats import TenantStats
from aegisd.devtenant.tenant import Tenant

__all__ = ["DevTenant", "open_dev_tenant", "serve_dev_tenant"]

log = logging.getLogger("aegisd.devtenant")


@final
class DevTenant:
    """Handle on a running dev tenant (what ``nursery.start(serve_dev_tenant, ...)`` returns).

    Attributes:
        port: the TCP port on 127.0.0.1 it listens on.
        issuer: ``http://127.0.0.1:PORT/`` (with trailing slash, as Auth0's issuers).
        client_id, client_secret: the Aegis application client.
        mgmt_client_id, mgmt_client_secret: the Management API machine client.
        api_client_id, api_client_secret: the Custom API Client linked to ``audience`` (the
            one client allowed to exchange its access tokens at Token Vault).
        user_id: the approver (``login_hint`` sub).
    """

    def __init__(self, tenant: Tenant, port: int, stop: trio.Event) -> None:
        self._tenant = tenant
        self._stop = stop
        self.port = port
        self.issuer = tenant.issuer
        app = tenant.clients.by_kind("app")
        mgmt = tenant.clients.by_kind("mgmt")
        self.client_id = app.client_id
        self.client_secret = app.client_secret
        self.mgmt_client_id = mgmt.client_id
        self.mgmt_client_secret = mgmt.client_secret
        api = tenant.clients.by_kind("resource_server")
        self.api_client_id = api.client_id
        self.api_client_secret = api.client_secret
        self.user_id = tenant.options.user_id

    @property
    def options(self) -> DevTenantOptions:
        return self._tenant.options

    @property
    def phone_url(self) -> str:
        return self.issuer

    @property
    def audience(self) -> str:
        return self._tenant.options.api_audience

    @property
    def mgmt_audience(self) -> str:
        return self._tenant.mgmt_audience

    @property
    def stats(self) -> TenantStats:
        """Live request counters (see ``TenantStats``)."""
        return self._tenant.stats

    @property
    def faults(self) -> Faults:
        return self._tenant.faults.faults

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this tenant."""
        return self.issuer + path.lstrip("/")

    def pending(self) -> list[PendingRequest]:
        """Pending CIBA requests, oldest first (``id`` is the ``auth_req_id``)."""
        return self._tenant.pending()

    def approve(self, req_id: str) -> None:
        """Approve as the person would. Raises ``UnknownRequest`` if not pending."""
        self._tenant.approve(req_id)

    def deny(self, req_id: str) -> None:
        """Deny as the person would. Raises ``UnknownRequest`` if not pending."""
        self._tenant.deny(req_id)

    def rotate_keys(self, keep_old: bool | None = None) -> str:
        """Make a new signing key; return its ``kid`` (see ``KeySet.rotate``)."""
        return self._tenant.rotate_keys(keep_old)

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the fault switches, like ``POST /_dev/faults``.

        The switches in force afterwards are ``faults`` (default: all off) with ``changes``
        applied by name; a switch not named is off. ``set_faults()`` switches every fault off.

        Raises:
            ValueError, TypeError: an unknown switch or an out-of-range value.
        """
        if faults is None:
            faults = Faults()
        if changes:
            faults = msgspec.structs.replace(faults, **changes)
            faults.__post_init__()  # replace() skips validation
        self._tenant.set_faults(faults)
        return faults

    def issued_secrets(self) -> list[str]:
        """Every secret or token value this tenant ever issued (for secret-leak scans)."""
        return self._tenant.issued_secrets()

    def facts(self) -> TenantFacts:
        return TenantFacts(
            issuer=self.issuer,
            client_id=self.client_id,
            client_secret=self.client_secret,
            mgmt_client_id=self.mgmt_client_id,
            mgmt_client_secret=self.mgmt_client_secret,
            api_client_id=self.api_client_id,
            api_client_secret=self.api_client_secret,
            user_id=self.user_id,
            audience=self.audience,
        )

    def write_state(self, state_dir: Path, *, caller_exe: str | None = None) -> tuple[Path, Path]:
        """Write ``aegisd.toml`` and ``secrets.env`` (0600) for this tenant into ``state_dir``.

        Returns:
            The paths of the config and the secrets file.
        """
        return write_state_config(self.facts(), state_dir, caller_exe=caller_exe)

    def stop(self) -> None:
        """Ask the server to shut down gracefully; ``serve_dev_tenant`` then returns."""
        self._stop.set()


def _bind_loopback(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_dev_tenant(
    options: DevTenantOptions,
    *,
    now: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[DevTenant] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a dev tenant on 127.0.0.1 until cancelled or stopped.

    Args:
        options: how the tenant behaves.
        now: the wall clock for token stamps and expiry (injectable for tests).
        task_status: trio's start protocol; receives the ``DevTenant`` once listening.

    Raises:
        OSError: the port cannot be bound or the state dir cannot be written.
        ValueError: a state file exists but cannot be parsed.
    """
    sock = _bind_loopback(options.port)
    port = sock.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}/"
    try:
        loaded = await trio.to_thread.run_sync(lambda: load_state(options, wall=now()))
    except BaseException:
        sock.close()
        raise
    tenant = Tenant(options, loaded, issuer=issuer, wall=now)
    stop = trio.Event()
    handle = DevTenant(tenant, port, stop)
    if options.state_dir is not None:
        try:
            await trio.to_thread.run_sync(handle.write_state, options.state_dir)
        except BaseException:
            sock.close()
            raise

    config = HypercornConfig()
    # Hypercorn takes ownership of the descriptor and closes it on shutdown.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None  # app.RequestLog writes our own line, without query strings
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        if options.auto_approve_ms is not None:
            delay = options.auto_approve_ms / 1000

            async def auto_approve(auth_req_id: str) -> None:
                await trio.sleep(delay)
                if any(p.id == auth_req_id for p in tenant.pending()):
                    tenant.approve(auth_req_id)

            def on_started(request: CibaRequest) -> None:
                nursery.start_soon(auto_approve, request.auth_req_id)

            tenant.on_started = on_started

        app = cast("Framework", build_app(tenant))  # Starlette's ASGI types are looser
        async with trio.open_nursery() as server_nursery:
            await server_nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            log.info("dev tenant listening on %s", issuer)
            task_status.started(handle)
        # Hypercorn returned after a graceful stop: end the auto-approve timers too.
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_dev_tenant(
    options: DevTenantOptions | None = None, *, now: Callable[[], float] = time.time
) -> AsyncIterator[DevTenant]:
    """``async with open_dev_tenant(opts) as tenant:`` — a tenant for the block's duration."""
    async with trio.open_nursery() as nursery:
        tenant: DevTenant = await nursery.start(
            partial(serve_dev_tenant, options or DevTenantOptions(), now=now)
        )
        try:
            yield tenant
        finally:
            nursery.cancel_scope.cancel()

"""The dev tenant's ASGI application: every endpoint group, fault injection, the request log.

Owns the composition (Authentication API, Management API, demo API, phone, ``/_dev/``
control) and the per-request log line: method, path (query dropped, long path segments such
as request ids shortened), status, milliseconds. Never a body, header, secret or token. It must
not start a server (``server.py`` does).
"""

from __future__ import annotations

import logging
from typing import Final, final

import trio
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegisd.devtenant.authapi import AuthApi
from aegisd.devtenant.control import ControlApi
from aegisd.devtenant.demoapi import DemoApi
from aegisd.devtenant.faults import FaultInjector
from aegisd.devtenant.mgmtapi import MgmtApi
from aegisd.devtenant.phone import PhonePage
from aegisd.devtenant.tenant import Tenant

__all__ = ["build_app", "loggable_path"]

log = logging.getLogger("aegisd.devtenant")

_MAX_SEGMENT: Final = 24


def loggable_path(path: str) -> str:
    """The path with long segments (request ids, user ids) cut to a recognisable stub."""
    return "/".join(seg if len(seg) <= _MAX_SEGMENT else seg[:8] + "…" for seg in path.split("/"))


@final
class RequestLog:
    """ASGI middleware: counts every request and logs one line per answer."""

    def __init__(self, app: ASGIApp, tenant: Tenant) -> None:
        self._app = app
        self._tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        self._tenant.stats.requests += 1
        started = trio.current_time()
        status = 0

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, logging_send)
        finally:
            fault = scope.get("aegis.fault")  # set by FaultInjector on the same scope
            log.info(
                "%s %s %s %.1fms%s",
                scope["method"],
                loggable_path(scope["path"]),
                status or "-",
                (trio.current_time() - started) * 1000,
                f" fault={fault}" if fault else "",
            )


def build_app(tenant: Tenant) -> ASGIApp:
    """The full ASGI app for ``tenant``."""
    routes = [
        *AuthApi(tenant).routes(),
        *MgmtApi(tenant).routes(),
        *DemoApi(tenant).routes(),
        *PhonePage(tenant).routes(),
        *ControlApi(tenant).routes(),
    ]
    app: ASGIApp = Starlette(routes=routes)
    app = FaultInjector(app, tenant.faults, wall=tenant.wall)
    return RequestLog(app, tenant)

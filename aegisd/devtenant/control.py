"""Control endpoints under ``/_dev/``: fault switches, key rotation, counters.

Owns ``GET``/``POST /_dev/faults`` (the JSON body is a full ``Faults`` object; unknown keys and
out-of-range values are a 400), ``POST /_dev/rotate-keys`` (optional JSON
``{"keep_old": bool}``) and ``GET /_dev/stats``. These endpoints are never faulted, so a test
can always switch faults off. No authentication: the tenant is loopback-only and not a
security boundary.
"""

from __future__ import annotations

from typing import final

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aegisd.devtenant.options import Faults
from aegisd.devtenant.statedir import save_key
from aegisd.devtenant.tenant import Tenant

__all__ = ["ControlApi"]


class _Rotate(msgspec.Struct, forbid_unknown_fields=True):
    keep_old: bool | None = None


@final
class ControlApi:
    """``/_dev/`` endpoints bound to one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self._t = tenant

    def routes(self) -> list[Route]:
        return [
            Route("/_dev/faults", self.get_faults, methods=["GET"]),
            Route("/_dev/faults", self.set_faults, methods=["POST"]),
            Route("/_dev/rotate-keys", self.rotate_keys, methods=["POST"]),
            Route("/_dev/stats", self.stats, methods=["GET"]),
        ]

    async def get_faults(self, request: Request) -> Response:
        return Response(msgspec.json.encode(self._t.faults.faults), media_type="application/json")

    async def set_faults(self, request: Request) -> Response:
        try:
            faults = msgspec.json.decode(await request.body() or b"{}", type=Faults)
        except msgspec.ValidationError as exc:
            return JSONResponse({"error": "invalid_faults", "detail": str(exc)}, status_code=400)
        except msgspec.DecodeError:
            return JSONResponse({"error": "invalid_faults", "detail": "not JSON"}, status_code=400)
        self._t.set_faults(faults)
        return Response(msgspec.json.encode(faults), media_type="application/json")

    async def rotate_keys(self, request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body() or b"{}", type=_Rotate)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        t = self._t
        kid = t.keys.rotate(t.mono(), keep_old=body.keep_old)
        if t.state_dir is not None:
            await trio.to_thread.run_sync(save_key, t.state_dir, t.keys)
        return JSONResponse({"kid": kid, "jwks": t.keys.jwks(t.mono())})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self._t.stats.as_dict())

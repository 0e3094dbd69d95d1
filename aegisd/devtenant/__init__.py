"""A local Auth0-compatible tenant for the demo and the tests (NOT a security boundary).

Public names: ``DevTenantOptions`` and ``Faults`` (settings), ``serve_dev_tenant`` (trio start
protocol) and ``open_dev_tenant`` (async context manager) returning a ``DevTenant`` handle,
``PendingRequest`` (what the phone shows) and ``UnknownRequest`` (approve/deny of an id that is
not pending). Module map: ``server`` runs it; ``app`` composes ``authapi`` (discovery, JWKS,
CIBA, Token Vault, client_credentials), ``mgmtapi``, ``demoapi``, ``phone`` and ``control``
(``/_dev/``) behind ``faults``; state lives in ``tenant`` (``ciba``, ``clients``, ``tokens``,
``signing``, ``users``, ``stats``); ``statedir`` persists it and ``stateconfig`` writes the
daemon's ``aegisd.toml`` and ``secrets.env``. The daemon talks to it over plain HTTP only with
``allow_insecure_http = true`` on a loopback issuer.
"""

from __future__ import annotations

from aegisd.devtenant.ciba import PendingRequest
from aegisd.devtenant.options import DevTenantOptions, Faults
from aegisd.devtenant.server import DevTenant, open_dev_tenant, serve_dev_tenant
from aegisd.devtenant.tenant import UnknownRequest

__all__ = [
    "DevTenant",
    "DevTenantOptions",
    "Faults",
    "PendingRequest",
    "UnknownRequest",
    "open_dev_tenant",
    "serve_dev_tenant",
]

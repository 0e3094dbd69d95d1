"""The "phone": a Guardian-like page to approve or deny pending CIBA requests, and its API.

Owns ``GET /`` (an HTML page listing each pending request with its binding message, scopes,
RAR ``authorization_details`` including the caller's identity, and the seconds left; plain
HTML forms for Approve and Deny; auto-refresh), ``GET /phone/pending`` (JSON) and
``POST /phone/approve/{id}`` / ``POST /phone/deny/{id}`` (303 back to ``/`` for a browser,
JSON for a client that accepts it). Every value is HTML-escaped. Not a security boundary: it
binds to loopback and trusts whoever can reach it, which is the point of a dev tenant.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template
from typing import Any, Final, final
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from aegisd.devtenant.ciba import PendingRequest
from aegisd.devtenant.tenant import Tenant, UnknownRequest

__all__ = ["PhonePage", "render_cards"]

_REFRESH_SECONDS: Final = 2


def _card(req: PendingRequest) -> str:
    esc = html.escape
    path_id = quote(req.id, safe="")
    scopes = " ".join(f"<code>{esc(s)}</code>" for s in req.scope)
    parts = [
        f'<section class="card" data-id="{esc(req.id)}">',
        f'<p class="message">{esc(req.binding_message)}</p>',
        f'<p class="meta">User <code>{esc(req.user_id)}</code></p>',
        f'<p class="meta">Scopes {scopes}</p>',
    ]
    if req.audience:
        parts.append(f'<p class="meta">API <code>{esc(req.audience)}</code></p>')
    if req.authorization_details:
        parts.append(_details(req.authorization_details))
    parts += [
        f'<p class="meta left">{req.seconds_left} s left</p>',
        '<div class="buttons">',
        f'<form method="post" action="/phone/approve/{esc(path_id)}">'
        '<button class="approve" type="submit">Approve</button></form>',
        f'<form method="post" action="/phone/deny/{esc(path_id)}">'
        '<button class="deny" type="submit">Deny</button></form>',
        "</div>",
        "</section>",
    ]
    return "\n".join(parts)


def _details(details: list[dict[str, Any]]) -> str:
    """Guardian's rendering: the instruction, then each displayed property in display_order
    (``ciba.py`` admitted only that shape)."""
    esc = html.escape
    entry = details[0]
    props = sorted(
        (p for p in entry.get("properties", []) if p.get("display")),
        key=lambda p: p.get("display_order", 0),
    )
    rows = "".join(
        f'<tr><th>{esc(str(p["name"]))}</th><td class="rar-value">{esc(str(p["value"]))}</td></tr>'
        for p in props
    )
    return (
        f'<p class="meta instruction">{esc(str(entry.get("instruction", "")))}</p>'
        f'<table class="rar">{rows}</table>'
    )


def render_cards(pending: list[PendingRequest]) -> str:
    """The page body: newest request first, or a note that nothing is pending."""
    if not pending:
        return '<p class="empty">No pending requests.</p>'
    return "\n".join(_card(r) for r in sorted(pending, key=lambda r: -r.created_at))


@final
class PhonePage:
    """Phone endpoints bound to one tenant."""

    def __init__(self, tenant: Tenant) -> None:
        self._t = tenant
        source = resources.files("aegisd.devtenant").joinpath("phone.html")
        self._template = Template(source.read_text("utf-8"))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/phone/pending", self.pending, methods=["GET"]),
            Route("/phone/approve/{req_id}", self.approve, methods=["POST"]),
            Route("/phone/deny/{req_id}", self.deny, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        pending = self._t.pending()
        body = self._template.substitute(
            refresh=_REFRESH_SECONDS, count=len(pending), cards=render_cards(pending)
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def pending(self, request: Request) -> Response:
        data = msgspec.json.encode({"pending": self._t.pending()})
        return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def approve(self, request: Request) -> Response:
        return self._answer(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return self._answer(request, approve=False)

    def _answer(self, request: Request, *, approve: bool) -> Response:
        req_id = request.path_params["req_id"]
        wants_json = "application/json" in request.headers.get("accept", "")
        try:
            if approve:
                self._t.approve(req_id)
            else:
                self._t.deny(req_id)
        except UnknownRequest:
            if wants_json:
                data = msgspec.json.encode(
                    {"error": "not_pending", "error_description": "No pending request has this id"}
                )
                return Response(data, status_code=404, media_type="application/json")
            # a browser that clicked on an expired card just goes back to the list
            return RedirectResponse("/", status_code=303)
        if wants_json:
            status = "approved" if approve else "denied"
            return Response(
                msgspec.json.encode({"id": req_id, "status": status}),
                media_type="application/json",
            )
        return RedirectResponse("/", status_code=303)

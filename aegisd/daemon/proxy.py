"""Proxy mode: the one HTTP request a policy template allows, made by the daemon itself.

Owns rendering the request (URL parameters percent-encoded by ``CompiledAction.render_url``),
injecting the credential, the host pin, size caps, the deadline, and turning the answer into
status, allowed headers and body. Redirects are never followed (a 3xx is refused), so a
template can only reach the host it names. ``timeout`` is one deadline for the whole
exchange (connect, send, headers and every byte of the body), so an upstream that trickles a
byte a second cannot hold a request open. Nothing of the answer goes back before all of it
has been read and searched for the credential (``reflection``): an answer that carries it in
any returned header or the body is withheld whole (``credential_reflected``). The credential
never leaves this module's request; it must not be logged, returned or kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx
import trio

from aegisd.auth0.tokens import token_fingerprint
from aegisd.daemon.reflection import CredentialScan
from aegisd.errors import CredentialReflected, InvalidParams, PolicyDenied, UpstreamError
from aegisd.frame_budget import fit_headers
from aegisd.policy import CompiledAction

__all__ = ["Audit", "ProxyResult", "perform"]

log = logging.getLogger(__name__)

_USER_AGENT: Final = "aegisd-proxy/0.1"
# closing a cut-off response must not hang on a hostile upstream either
_CLOSE_GRACE: Final = 1.0

Audit = Callable[..., Awaitable[None]]
"""``await audit(event, **fields)``: a durable audit record about this request."""


@dataclass(frozen=True)
class ProxyResult:
    status: int
    headers: dict[str, str]
    body: bytes


async def perform(
    http: httpx.AsyncClient,
    action: CompiledAction,
    params: dict[str, str],
    body: bytes | None,
    *,
    credential: str | None,
    token_type: str = "Bearer",
    audit: Audit | None = None,
) -> ProxyResult:
    """Make the request; raise ``UpstreamError`` (``CredentialReflected`` among them),
    ``InvalidParams`` or ``PolicyDenied`` on refusal.

    ``audit`` receives a ``credential_reflected`` record (the token's fingerprint, where and
    in which form it was found, never the token) before that refusal is raised.
    """
    req = action.spec.request
    if req is None:  # compile_policy guarantees this for proxy actions
        raise PolicyDenied("action has no request template")
    if body is not None and not req.body:
        raise InvalidParams("this action does not accept a request body")
    if body is not None and len(body) > req.max_request_body:
        raise InvalidParams(f"request body exceeds {req.max_request_body} bytes")
    url = action.render_url(params)
    pinned = urlsplit(req.url.split("{", 1)[0])
    actual = urlsplit(url)
    if (actual.scheme, actual.hostname, actual.port) != (
        pinned.scheme,
        pinned.hostname,
        pinned.port,
    ):
        raise PolicyDenied("the rendered URL leaves the host the policy names")
    host = actual.hostname or "the API"
    headers = {"user-agent": _USER_AGENT, **req.headers}
    if credential is not None:
        scheme = req.auth_scheme or token_type or "Bearer"
        headers["authorization"] = f"{scheme} {credential}"
    try:
        request = http.build_request(
            req.method, url, headers=headers, content=body, timeout=req.timeout
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"request to {host} failed ({type(exc).__name__})") from None
    result: ProxyResult | None = None
    with trio.move_on_after(req.timeout):
        result = await _exchange(http, request, host, req.max_response_body)
    if result is None:
        raise UpstreamError(
            f"timeout: {host} did not send its whole answer within {req.timeout:g} s"
        )
    allowed = {h.lower() for h in req.response_headers}
    whole = {k.lower(): v for k, v in result.headers.items() if k.lower() in allowed}
    if credential is not None:
        # searched before cutting: a cut must not turn a found token into an unfound half
        await _refuse_reflection(credential, whole, result.body, host, audit)
    returned, cut = fit_headers(whole)
    if cut:
        log.warning("cut response header(s) %s of %s to fit one frame", ", ".join(cut), host)
    return ProxyResult(result.status, returned, result.body)


async def _exchange(
    http: httpx.AsyncClient, request: httpx.Request, host: str, max_body: int
) -> ProxyResult:
    """Send, then read the whole answer (at most ``max_body`` bytes); every header kept."""
    try:
        response = await http.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException:
        raise UpstreamError(f"timeout: {host} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"request to {host} failed ({type(exc).__name__})") from None
    try:
        if response.is_redirect or 300 <= response.status_code < 400:
            raise UpstreamError(
                f"{host} answered with a redirect ({response.status_code}); "
                "proxy mode never follows redirects"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body:
                    raise UpstreamError(f"response from {host} exceeds {max_body} bytes")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise UpstreamError(f"timeout: {host} stopped sending its answer") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"reading the answer from {host} failed ({type(exc).__name__})"
            ) from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_GRACE):
            await response.aclose()
    return ProxyResult(response.status_code, dict(response.headers.items()), b"".join(chunks))


async def _refuse_reflection(
    credential: str, headers: dict[str, str], body: bytes, host: str, audit: Audit | None
) -> None:
    """Raise ``CredentialReflected`` (audited first) if the answer carries the credential."""
    scan = CredentialScan.for_credential(credential)
    where: str | None = None
    form: str | None = None
    hit = scan.find_in_headers(headers)
    if hit is not None:
        where, form = f"header {hit[0]}", hit[1]
    else:
        form = scan.find(body)
        where = "body" if form is not None else None
    if where is None:
        return
    if audit is not None:
        with trio.CancelScope(shield=True):  # the refusal below is only told once this lands
            await audit(
                "credential_reflected",
                fingerprint=token_fingerprint(credential),
                found_in=where,
                form=form,
            )
    raise CredentialReflected(
        f"the answer from {host} contained the credential aegisd sent ({form} in the {where}), "
        "so none of it was returned; the request itself may have taken effect"
    )

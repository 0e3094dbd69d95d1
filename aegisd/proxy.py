"""Proxy mode: the one HTTP request a policy template allows, made by the daemon itself.

Owns rendering the request (URL parameters percent-encoded by ``CompiledAction.render_url``),
injecting the credential, the host pin, size caps, the timeout, and turning the answer into
status, allowed headers and body. Redirects are never followed (a 3xx is refused), so a
template can only reach the host it names. The credential never leaves this module's request;
it must not be logged, returned or kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from aegisd.errors import InvalidParams, PolicyDenied, UpstreamError
from aegisd.policy import CompiledAction

__all__ = ["ProxyResult", "perform"]

_USER_AGENT: Final = "aegisd-proxy/0.1"


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
) -> ProxyResult:
    """Make the request; raise ``UpstreamError``/``InvalidParams``/``PolicyDenied`` on refusal."""
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
    headers = {"user-agent": _USER_AGENT, **req.headers}
    if credential is not None:
        scheme = req.auth_scheme or token_type or "Bearer"
        headers["authorization"] = f"{scheme} {credential}"
    try:
        request = http.build_request(
            req.method, url, headers=headers, content=body, timeout=req.timeout
        )
        response = await http.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException:
        raise UpstreamError(f"{actual.hostname} did not answer within {req.timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"request to {actual.hostname} failed ({type(exc).__name__})") from None
    try:
        if response.is_redirect or 300 <= response.status_code < 400:
            raise UpstreamError(
                f"{actual.hostname} answered with a redirect ({response.status_code}); "
                "proxy mode never follows redirects"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > req.max_response_body:
                    raise UpstreamError(
                        f"response from {actual.hostname} exceeds {req.max_response_body} bytes"
                    )
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"reading the answer from {actual.hostname} failed ({type(exc).__name__})"
            ) from None
    finally:
        await response.aclose()
    allowed = {h.lower() for h in req.response_headers}
    out_headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in allowed}
    return ProxyResult(response.status_code, out_headers, b"".join(chunks))

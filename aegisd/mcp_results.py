"""The MCP tool results aegis-mcp and ``@with_async_authorization`` return, and their schema.

Owns the shapes a model sees: a refusal (``isError`` with ``structuredContent.error.code``,
the stable wire codes), an approval still pending (``approval_pending``, with what to do
next), and an API's answer (``{status, headers, body}``), plus ``PROXY_OUTPUT_SCHEMA``, the
``outputSchema`` that describes all three. It imports only ``aegisd.errors`` and, inside each
function, ``mcp_types``: the SDK (``aegisd.client``) reaches it only when mcp is already
loaded, and it must never import the client or the shim (no cycle).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from aegisd.errors import AegisError

if TYPE_CHECKING:
    import mcp_types

__all__ = [
    "PROXY_OUTPUT_SCHEMA",
    "error_result",
    "pending_result",
    "proxy_result",
]

_ERROR_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "stable machine code (see aegisd's docs)"},
        "message": {"type": "string"},
        "retry_after": {"type": "number", "description": "seconds before trying again"},
        "expires_at": {"type": "number", "description": "Unix time the approval expires"},
    },
    "required": ["code", "message"],
}

PROXY_OUTPUT_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "properties": {
        "status": {"type": "integer", "description": "the API's HTTP status"},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "the response headers the policy lets through",
        },
        "body": {"description": "the parsed JSON answer, else its text; null when binary"},
        "body_base64": {"type": "string", "description": "a binary answer, base64"},
        "error": _ERROR_SCHEMA,
    },
    # no top-level "required": an answer has status/headers/body, a refusal only error, and a
    # "required" inside anyOf branches is refused by strict validators (ajv's strictRequired)
}


def error_result(exc: AegisError) -> mcp_types.CallToolResult:
    """A refusal as the model sees it: ``isError`` with the stable code, no secrets."""
    import mcp_types

    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    if exc.retry_after is not None:
        error["retry_after"] = exc.retry_after
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=f"{exc.code}: {exc.message}")],
        structured_content={"error": error},
        is_error=True,
    )


def pending_result(
    binding_message: str, expires_at: float, retry_after: float, *, now: float | None = None
) -> mcp_types.CallToolResult:
    """The approval is still out: say what the person sees and what the model should do."""
    import mcp_types

    left = max(0, round(expires_at - (time.time() if now is None else now)))
    what = f": {binding_message}" if binding_message else ""
    text = (
        f"Waiting for the person's approval on their phone{what}. The request stays valid "
        f"for {left} s. Call this tool again with the same arguments to continue; do not "
        "change them."
    )
    error = {
        "code": "approval_pending",
        "message": text,
        "retry_after": retry_after,
        "expires_at": expires_at,
    }
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)],
        structured_content={"error": error},
        is_error=True,
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def proxy_result(status: int, headers: Mapping[str, str], body: bytes) -> mcp_types.CallToolResult:
    """The API's answer: the body as text, and ``{status, headers, body}`` as structured content.

    ``body`` is the parsed JSON for a JSON response, else the text; a body that is not UTF-8
    is given as ``body_base64`` instead. A status of 400 or more is an ``isError`` result
    whose ``error.code`` is ``upstream_error``; the API's answer is still included.
    """
    import base64

    import mcp_types

    structured: dict[str, object] = {"status": status, "headers": dict(headers)}
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        structured["body"] = None
        structured["body_base64"] = base64.b64encode(body).decode("ascii")
        shown = f"({len(body)} bytes of binary data, base64 in structuredContent)"
    else:
        parsed: object = text
        if text and _is_json(headers.get("content-type", "")):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
        structured["body"] = parsed
        shown = text
    failed = status >= 400
    if failed:
        structured["error"] = {
            "code": "upstream_error",
            "message": f"the API answered HTTP {status}",
        }
        shown = f"The API answered HTTP {status}." + (f"\n{shown}" if shown else "")
    elif not shown:
        shown = f"HTTP {status} (empty response)"
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=shown)],
        structured_content=structured,
        is_error=failed,
    )

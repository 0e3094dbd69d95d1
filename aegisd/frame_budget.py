"""How a proxied answer fits one 64 KiB frame: decided before the request, kept after it.

A ``ProxyResponse`` (status, returned headers, body) travels in one frame. If an answer only
turned out too large after the API had done the work, the caller would get an error for a
deletion that happened. So the policy is checked at load time (``problems``: the body limit
plus the worst case of every returned header must fit), and at answer time every returned
header value is cut to ``HEADER_VALUE_MAX`` bytes (``fit_headers``), which keeps the frame
within that worst case whatever the upstream sends.

Pure code: no I/O. It must not decide *which* headers are returned (the policy does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from aegisd.wire import MAX_FRAME

__all__ = ["HEADER_VALUE_MAX", "fit_headers", "frame_problems"]

HEADER_VALUE_MAX: Final = 1024
# msgpack envelope of a ProxyResponse with the largest id and status and an empty header map
# and body (59 bytes), plus the growth of the map (fixmap -> map16) and bin (bin8 -> bin32)
# length prefixes; rounded up.
_ENVELOPE: Final = 72
_PER_HEADER: Final = 3 + 3  # str16 length prefixes of name and value


def _worst_case(names: Iterable[str], max_body: int) -> int:
    return (
        _ENVELOPE
        + max_body
        + sum(_PER_HEADER + len(n.lower().encode()) + HEADER_VALUE_MAX for n in set(names))
    )


def frame_problems(names: list[str], max_body: int) -> list[str]:
    """Why ``response_headers`` and ``max_response_body`` cannot share one frame, if they
    cannot (empty list when they can)."""
    worst = _worst_case((n.lower() for n in names), max_body)
    if worst <= MAX_FRAME:
        return []
    return [
        f"max_response_body ({max_body}) plus {len(set(names))} response header(s) of up to "
        f"{HEADER_VALUE_MAX} bytes each need {worst} bytes, more than one {MAX_FRAME}-byte "
        "frame; lower max_response_body or return fewer headers"
    ]


def fit_headers(headers: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Each value cut to ``HEADER_VALUE_MAX`` UTF-8 bytes; also the names that were cut."""
    out: dict[str, str] = {}
    cut: list[str] = []
    for name, value in headers.items():
        raw = value.encode()
        if len(raw) > HEADER_VALUE_MAX:
            value = raw[:HEADER_VALUE_MAX].decode(errors="ignore")
            cut.append(name)
        out[name] = value
    return out, cut

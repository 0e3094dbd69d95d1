"""Finding the credential in an upstream's answer before it goes back to the caller.

An API that echoes the request (debug endpoints, error pages quoting the request, a
compromised upstream) would hand the agent the token aegisd injected, and the token works
without an approval. ``CredentialScan`` lists the forms in which an API would plausibly
write that token back, and ``find`` reports the first one present in an answer's body or
headers, so the proxy can withhold the whole answer.

Forms covered: the raw token (hence also inside ``Bearer <token>``), its hexadecimal, and
standard and URL-safe base64, with or without padding, at all three byte alignments (so a
token encoded *inside* a longer text, ``Authorization: Bearer <token>`` in a base64 request
dump, is found too); each of those also after undoing JSON string escapes (``\\/``,
``\\uXXXX``, any subset of characters) and percent-encoding (any subset, either case, up to
three times over, ``+`` as space). Not covered: encryption, compression, MIME line-wrapped
base64, case-folding, or a token split across fields; an upstream that goes that far is
hostile beyond echoing, and reaches only what the token could reach anyway.

Pure code: no I/O, no state beyond the needles of one request. It must never log, return or
keep the token; a match is described only by the name of the form that matched.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = ["CredentialScan"]

# Base64 slices shorter than this would match innocent text by chance; real tokens are far
# longer (a GitHub token is 40 characters, a JWT several hundred).
_MIN_NEEDLE: Final = 8
_PERCENT_ROUNDS: Final = 3
_JSON_ESCAPE: Final = re.compile(rb"\\(?:u([0-9A-Fa-f]{4})|(.))", re.DOTALL)
_JSON_SIMPLE: Final = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def _unescape_json(data: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass")
        ch = m.group(2)
        return _JSON_SIMPLE.get(ch, ch)

    return _JSON_ESCAPE.sub(one, data)


def _views(data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` as sent, then with JSON escapes and percent-encoding undone (each only when
    the text has them, so a plain answer costs one pass)."""
    yield "", data
    bases = [("", data)]
    if b"\\" in data:
        unjson = _unescape_json(data)
        if unjson != data:
            yield "JSON-escaped ", unjson
            bases.append(("JSON-escaped ", unjson))
    for label, base in bases:
        view = base
        for _ in range(_PERCENT_ROUNDS):
            if b"%" not in view and b"+" not in view:
                break
            decoded = unquote_to_bytes(view.replace(b"+", b" "))
            if decoded == view:
                break
            view = decoded
            yield label + "percent-encoded ", view


def _base64_forms(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Each alignment's run of whole 3-byte groups: present in any base64 text that encodes
    ``raw`` at any offset, padded or not."""
    for skip in range(3):
        part = raw[skip:]
        part = part[: len(part) // 3 * 3]
        if len(part) * 4 // 3 < _MIN_NEEDLE:
            continue
        yield "base64", base64.b64encode(part)
        yield "base64url", base64.urlsafe_b64encode(part)


@dataclass(frozen=True)
class CredentialScan:
    """The needles for one credential; ``find`` looks for them in an answer."""

    needles: tuple[tuple[str, bytes], ...]

    @classmethod
    def for_credential(cls, credential: str) -> CredentialScan:
        raw = credential.encode()
        forms: dict[bytes, str] = {raw: "raw"}
        forms.setdefault(raw.hex().encode(), "hex")
        forms.setdefault(raw.hex().upper().encode(), "hex")
        for name, enc in _base64_forms(raw):
            forms.setdefault(enc, name)
        return cls(tuple((name, needle) for needle, name in forms.items() if needle))

    def find(self, data: bytes) -> str | None:
        """How the credential appears in ``data`` ("raw", "percent-encoded base64"...), or
        None when it does not."""
        for label, view in _views(data):
            for name, needle in self.needles:
                if needle in view:
                    return label + name
        return None

    def find_in_headers(self, headers: dict[str, str]) -> tuple[str, str] | None:
        """(header name, form) of the first returned header that carries the credential."""
        for key, value in headers.items():
            form = self.find(f"{key}: {value}".encode("utf-8", "surrogateescape"))
            if form is not None:
                return key, form
        return None

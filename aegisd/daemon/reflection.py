"""Finding the credential in an upstream's answer before it goes back to the caller.

An API that echoes the request (debug endpoints, error pages quoting the request, a
compromised upstream) would hand the agent the token aegisd injected, and the token works
without an approval. ``CredentialScan`` lists the forms in which an API would plausibly
write that token back, and ``find`` reports the first one present in an answer's body or
headers, so the proxy can withhold the whole answer.

Forms covered: the raw token (hence also inside ``Bearer <token>``), its hexadecimal, every
byte percent-encoded, and standard and URL-safe base64, with or without padding, at all three
byte alignments (so a token encoded *inside* a longer text, ``Authorization: Bearer <token>``
in a base64 request dump, is found too); each of those also after undoing JSON escapes of
punctuation (``\\/``, ``\\u002d`` in either case) and percent-encoding of punctuation (either
case, nested up to three times: ``%252F``). Not covered: encryption, compression, MIME
line-wrapped base64, case-folding, letters escaped one by one in JSON, a token cut short or
split across fields. An upstream that goes that far is hostile beyond echoing, and such an
upstream was sent the token anyway.

Pure code: no I/O, no state beyond the needles of one request. It must never log, return or
keep the token; a match is described only by the name of the form that matched.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["CredentialScan"]

# Base64 slices shorter than this would match innocent text by chance; real tokens are far
# longer (a GitHub token is 40 characters, a JWT several hundred).
_MIN_NEEDLE: Final = 8
_PERCENT_ROUNDS: Final = 3


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


def _every_byte_escaped(hexed: bytes) -> bytes:
    """``%XX`` for every byte, from its hex digits (slices, not a Python loop per byte)."""
    out = bytearray(len(hexed) // 2 * 3)
    out[0::3] = b"%" * (len(hexed) // 2)
    out[1::3] = hexed[0::2]
    out[2::3] = hexed[1::2]
    return bytes(out)


def _escapes(prefix: bytes, punct: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """(escaped, plain) for each punctuation byte of the token, upper and lower hex. Undoing
    only these with ``bytes.replace`` keeps a scan of an escape-heavy 56 KiB body fast (a
    general decoder runs Python code per escape, which a hostile body could multiply)."""
    pairs: list[tuple[bytes, bytes]] = []
    for b in punct:
        for form in (b"%02X" % b, b"%02x" % b):
            pairs.append((prefix + form, bytes([b])))
    return tuple(dict.fromkeys(pairs))


@dataclass(frozen=True, repr=False)  # the needles are the token: never in a repr or a log
class CredentialScan:
    """The needles for one credential; ``find`` looks for them in an answer."""

    needles: tuple[tuple[str, bytes], ...]
    plain_needles: tuple[tuple[str, bytes], ...]
    json_escapes: tuple[tuple[bytes, bytes], ...]
    percent_escapes: tuple[tuple[bytes, bytes], ...]

    def __repr__(self) -> str:
        return f"CredentialScan(<{len(self.needles) + len(self.plain_needles)} forms hidden>)"

    @classmethod
    def for_credential(cls, credential: str) -> CredentialScan:
        raw = credential.encode()
        forms: dict[bytes, str] = {raw: "raw"}
        for name, enc in _base64_forms(raw):
            forms.setdefault(enc, name)
        plain: dict[bytes, str] = {}
        for hexed in (raw.hex().encode(), raw.hex().upper().encode()):
            plain.setdefault(hexed, "hex")
            plain.setdefault(_every_byte_escaped(hexed), "percent-encoded")
        # what base64 and the raw token may contain besides letters and digits
        punct = bytes(sorted(b for b in set(raw + b"+/=") if not chr(b).isalnum()))
        return cls(
            tuple((name, needle) for needle, name in forms.items() if needle),
            tuple((name, needle) for needle, name in plain.items() if needle),
            ((b"\\/", b"/"), *_escapes(b"\\u00", punct)),
            _escapes(b"%", punct + b"%"),
        )

    def _views(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        """``data`` with JSON escapes undone, then percent-encoding too (each step only when
        the text has such escapes, so a plain answer costs no copy)."""
        label, view = "", data
        if b"\\" in data:
            unjson = data
            for escaped, plain in self.json_escapes:
                unjson = unjson.replace(escaped, plain)
            if unjson != data:
                label, view = "JSON-escaped ", unjson
                yield label, view
        for _ in range(_PERCENT_ROUNDS):
            if b"%" not in view:
                break
            nested = b"%25" in view  # only then can another round reveal more
            decoded = view
            for escaped, plain in self.percent_escapes:
                decoded = decoded.replace(escaped, plain)
            if decoded == view:
                break
            view = decoded
            yield label + "percent-encoded ", view
            if not nested:
                break

    def find(self, data: bytes) -> str | None:
        """How the credential appears in ``data`` ("raw", "percent-encoded base64"...), or
        None when it does not."""
        for name, needle in self.needles:
            if needle in data:
                return name
        for name, needle in self.plain_needles:  # letters and digits: no escape changes them
            if needle in data:
                return name
        for label, view in self._views(data):
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

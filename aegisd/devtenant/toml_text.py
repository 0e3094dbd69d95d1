"""TOML text for the files the dev tenant writes (``aegisd.toml``, ``users.toml``, clients).

Owns the escaping of TOML strings and keys and the rendering of plain values, so no writer
builds TOML by string formatting with unescaped input. Only the small subset the tenant needs:
strings, booleans, integers, floats, arrays of those, and inline tables. Reading is
``tomllib``'s job; this module must not do I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["TomlValue", "toml_key", "toml_string", "toml_value"]

TomlValue = str | bool | int | float | Sequence["TomlValue"] | Mapping[str, "TomlValue"]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES: Final = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(key: str) -> str:
    """A key as written in a table header or assignment: bare when it may be, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: TomlValue) -> str:
    """Render one value; tables become inline tables."""
    # bool first: it is a subclass of int
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML floats written here must be finite")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"

"""Writing TOML: the inverse of ``tomllib.loads`` for the values a config can hold.

Owns ``dumps``: a dict of str/int/float/bool/list/dict (what ``tomllib`` returns) as TOML text
that ``tomllib.loads`` reads back to an equal dict. Used to write a config the CLI rebuilt
(``service install --system``). Comments and formatting of the original are not kept. Must
not accept values TOML cannot express (``None``, bytes, dates it did not produce).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["dumps"]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _scalar(key)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are all valid escapes of a TOML basic string; JSON leaves DEL as is,
        # which TOML forbids in a string.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"TOML cannot hold a {type(value).__name__}")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(path: list[str], table: Mapping[str, object], out: list[str]) -> None:
    for key, value in table.items():
        if (isinstance(value, Mapping) and value) or _is_table_array(value):
            continue
        out.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in table.items():
        sub = [*path, _key(key)]
        if isinstance(value, Mapping) and value:
            # A table holding only tables needs no header of its own: [a.b] implies [a].
            if not all(
                _is_table_array(v) or (isinstance(v, Mapping) and v) for v in value.values()
            ):
                out.append("")
                out.append(f"[{'.'.join(sub)}]")
            _table(sub, value, out)
        elif _is_table_array(value):
            assert isinstance(value, list)
            for item in value:
                out.append("")
                out.append(f"[[{'.'.join(sub)}]]")
                _table(sub, item, out)


def dumps(doc: Mapping[str, object]) -> str:
    """``doc`` as TOML text (tables after the plain keys of each level)."""
    out: list[str] = []
    _table([], doc, out)
    return "\n".join(out).lstrip("\n") + "\n"

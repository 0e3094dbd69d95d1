"""Every problem of a TOML document against a msgspec Struct type, each with file and line.

msgspec stops at the first validation error and speaks its own language ("Object contains
unknown field ..."). This module walks the raw ``tomllib`` dict against the Struct types
itself (``msgspec.inspect.type_info``) and collects *every* problem: unknown keys (with a
"did you mean"), wrong types, values outside an enum (with the allowed values) and missing
required keys. ``tomllib`` gives no positions, so ``KeyLines`` finds each key's line in the
text. The walk also returns a *cleaned* document (bad values dropped) so callers can go on to
semantic checks and report those in the same run.

Generic on purpose: it knows nothing of Aegis's config (``config.py`` owns the shape and the
semantic checks, and imports this module, never the other way round). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Final

import msgspec
from msgspec import inspect as mi

__all__ = ["KeyLines", "Path", "Problem", "key_text", "walk"]

Path = tuple[str | int, ...]


class Problem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One thing wrong with a config file, for people (``render``) and scripts (JSON)."""

    file: str
    line: int | None = None
    key: str = ""
    message: str
    expected: str = ""
    allowed: list[str] = []
    suggestion: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: key {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        )


def key_text(path: Path) -> str:
    """``("actions", "gh.delete", "params")`` -> ``actions.gh.delete.params``; ints as ``[i]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# ---- where keys are ---------------------------------------------------------------------------

_BARE: Final = r"[A-Za-z0-9_-]+"
_BASIC: Final = r'"(?:[^"\\]|\\.)*"'
_LITERAL: Final = r"'[^']*'"
_KEY: Final = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED: Final = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_TABLE: Final = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_TABLE: Final = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_ASSIGN: Final = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART: Final = re.compile(_KEY)


def _split_keys(dotted: str) -> tuple[str, ...]:
    parts: list[str] = []
    for m in _PART.finditer(dotted):
        raw = m.group(0)
        if raw.startswith('"'):
            try:
                raw = msgspec.json.decode(raw.encode())
            except msgspec.DecodeError:
                raw = raw[1:-1]
        elif raw.startswith("'"):
            raw = raw[1:-1]
        parts.append(raw)
    return tuple(parts)


class KeyLines:
    """The 1-based line of each table header and key assignment in a TOML text.

    A light scan, not a parser: it follows ``[table]``, ``[[array.of.tables]]`` (counting
    their elements) and ``key = ...`` lines. Keys inside inline tables or multi-line values
    are found through their nearest enclosing key.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        current: Path = ()
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            if m := _ARRAY_TABLE.match(line):
                keys = _split_keys(m.group(1))
                counts[keys] = counts.get(keys, -1) + 1
                current = (*keys, counts[keys])
                self._lines.setdefault(keys, number)
                self._lines.setdefault(current, number)
            elif m := _TABLE.match(line):
                current = _split_keys(m.group(1))
                self._lines.setdefault(current, number)
            elif m := _ASSIGN.match(line):
                self._lines.setdefault((*current, *_split_keys(m.group(1))), number)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        in_multiline = quote

    def line(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    def line_of_key(self, key: str) -> int | None:
        """The line of a key written as ``key_text`` does (``actions.a.b.params``, ``x[0].y``).

        For problems that arrive as text (the policy's checks): action names may contain
        dots, so the text is compared with each known path's text, longest prefix first.
        """
        texts = {key_text(path): line for path, line in self._lines.items()}
        while key:
            if key in texts:
                return texts[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


# ---- the walk ---------------------------------------------------------------------------------


class _Drop:
    """Marks a value that is invalid and left out of the cleaned document."""


_DROP: Final = _Drop()


def _got(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def describe(t: mi.Type) -> str:
    """How a person would name what a type expects."""
    match t:
        case mi.StrType():
            return "a string"
        case mi.BoolType():
            return "true or false"
        case mi.IntType():
            return "an integer"
        case mi.FloatType():
            return "a number"
        case mi.LiteralType(values=values):
            return "one of " + ", ".join(f'"{v}"' for v in values)
        case mi.ListType(item_type=item):
            return f"an array of {_plural(describe(item))}"
        case mi.DictType(value_type=value):
            return f"a table of {_plural(describe(value))}"
        case mi.StructType():
            return "a table"
        case mi.UnionType(types=types):
            return " or ".join(describe(x) for x in types if not isinstance(x, mi.NoneType))
    return "a value"


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            rest = text[len(article) :]
            return rest + ("" if rest.endswith("s") else "s") if " " not in rest else rest
    return text


class _Walker:
    def __init__(self, source: str, lines: KeyLines, hidden: frozenset[str] = frozenset()) -> None:
        self.source = source
        self.lines = lines
        self.hidden = hidden  # root fields that are not TOML keys (set by the loader)
        self.problems: list[Problem] = []

    def add(
        self,
        path: Path,
        message: str,
        *,
        expected: str = "",
        allowed: Sequence[str] = (),
        suggestion: str | None = None,
    ) -> None:
        self.problems.append(
            Problem(
                file=self.source,
                line=self.lines.line(path),
                key=key_text(path),
                message=message,
                expected=expected,
                allowed=list(allowed),
                suggestion=suggestion,
            )
        )

    def value(self, value: object, t: mi.Type, path: Path) -> object:
        match t:
            case mi.StructType():
                return self.struct(value, t, path)
            case mi.UnionType(types=types):
                options = [x for x in types if not isinstance(x, mi.NoneType)]
                if len(options) == 1:
                    return self.value(value, options[0], path)
                for option in options:  # the first that fits without a problem
                    probe = _Walker(self.source, self.lines)
                    result = probe.value(value, option, path)
                    if not probe.problems:
                        return result
                return self.mismatch(value, t, path)
            case mi.LiteralType(values=values):
                if value in values and type(value) is type(values[0]):
                    return value
                allowed = [str(v) for v in values]
                near = difflib.get_close_matches(str(value), allowed, n=1)
                msg = f"expected {describe(t)}, got {_got(value)}"
                if near:
                    msg += f'; did you mean "{near[0]}"?'
                self.add(
                    path,
                    msg,
                    expected=describe(t),
                    allowed=allowed,
                    suggestion=near[0] if near else None,
                )
                return _DROP
            case mi.ListType(item_type=item):
                if not isinstance(value, list):
                    return self.mismatch(value, t, path)
                items = [self.value(v, item, (*path, i)) for i, v in enumerate(value)]
                return [v for v in items if v is not _DROP]
            case mi.DictType(value_type=item):
                if not isinstance(value, dict):
                    return self.mismatch(value, t, path)
                entries = {k: self.value(v, item, (*path, k)) for k, v in value.items()}
                return {k: v for k, v in entries.items() if v is not _DROP}
            case mi.StrType():
                ok = isinstance(value, str)
            case mi.BoolType():
                ok = isinstance(value, bool)
            case mi.IntType():
                ok = isinstance(value, int) and not isinstance(value, bool)
            case mi.FloatType():
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            case mi.AnyType():
                ok = True
            case _:
                ok = True  # a type this walker does not model: msgspec.convert judges it
        return value if ok else self.mismatch(value, t, path)

    def mismatch(self, value: object, t: mi.Type, path: Path) -> object:
        self.add(path, f"expected {describe(t)}, got {_got(value)}", expected=describe(t))
        return _DROP

    def struct(self, value: object, t: mi.StructType, path: Path) -> object:
        if not isinstance(value, dict):
            return self.mismatch(value, t, path)
        hidden = self.hidden if not path else frozenset()
        fields = {f.encode_name: f for f in t.fields if f.encode_name not in hidden}
        out: dict[str, object] = {}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                if not t.forbid_unknown_fields:
                    out[key] = item
                    continue
                names = sorted(fields)
                near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                msg = "unknown key" + (f"; did you mean {near[0]}?" if near else "")
                msg += f" (known here: {', '.join(names)})"
                self.add(
                    (*path, key),
                    msg,
                    allowed=names,
                    suggestion=near[0] if near else None,
                )
                continue
            result = self.value(item, field.type, (*path, key))
            if result is not _DROP:
                out[key] = result
        valid = True
        for field in fields.values():
            if field.required and field.encode_name not in out:
                valid = False
                if field.encode_name not in value:
                    self.add(
                        (*path, field.encode_name),
                        f"missing (required: {describe(field.type)})",
                        expected=describe(field.type),
                    )
        return out if valid else _DROP


def walk(
    raw: dict[str, object],
    root: type[msgspec.Struct],
    source: str,
    lines: KeyLines,
    hidden: frozenset[str] = frozenset(),
) -> tuple[dict[str, object], list[Problem]]:
    """Check ``raw`` against ``root``; return the cleaned document and every problem.

    ``hidden`` names fields of ``root`` that are not TOML keys (the loader sets them).
    """
    walker = _Walker(source, lines, hidden)
    cleaned = walker.struct(raw, mi.type_info(root), ())  # type: ignore[arg-type]
    if not isinstance(cleaned, dict):  # pragma: no cover - only with a required top-level key
        cleaned = {}
    return cleaned, walker.problems

"""How policy actions look to MCP hosts: tool names and parameter schemas they can compile.

Pure code, no I/O, standard library only. Policy patterns are Python regular expressions
that the daemon applies with ``fullmatch``; MCP hosts compile a tool's ``inputSchema`` with
JavaScript validators (ajv), where ``pattern`` is ECMA-262 and a *search*. This module owns
the three rules that keep the two in agreement, used by ``policy check`` (``policy.py``) and
by the shim alike:

* ``portability_problems``: Python-only constructs a host would reject or read differently;
* ``param_schema``: the schema of one parameter, its pattern anchored the way the daemon
  matches it, and integers accepted where the pattern admits only digits;
* ``tool_name`` / ``tool_name_collisions``: the MCP name of an action, and which actions
  would share one (an error: names must not change when actions are added).

It must not import the MCP SDK or anything of the daemon's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "MAX_TOOL_NAME",
    "STATUS_TOOL",
    "accepts_integer",
    "param_schema",
    "portability_problems",
    "tool_name",
    "tool_name_collisions",
]

STATUS_TOOL: Final = "aegis_status"  # the shim's own tool; no action may take its name
MAX_TOOL_NAME: Final = 64  # the strictest hosts allow ^[A-Za-z0-9_-]{1,64}$
_NOT_IN_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
# A pattern whose every match is a run of ASCII digits: ^\d+$, ^[0-9]{1,6}$, ^[1-9][0-9]*$
_DIGITS_ONLY: Final = re.compile(
    r"\^?(?:\\d|\[(?:[0-9]-[0-9]|[0-9])+\]|[0-9]|[*+?]|\{[0-9]+(?:,[0-9]*)?\})+\$?"
)
_INLINE_FLAG: Final = re.compile(r"\(\?[aiLmsux]*(?:-[imsx]+)?[:)]")


def tool_name(action: str) -> str:
    """The MCP tool name for an action: ``demo.read`` → ``demo_read``.

    Characters outside ``[A-Za-z0-9_-]`` become ``_`` and the name is cut to 64 characters,
    which every host accepts (dots are legal in MCP 2025-11-25 but refused by some hosts).
    """
    return _NOT_IN_NAME.sub("_", action)[:MAX_TOOL_NAME] or "_"


def tool_name_collisions(actions: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``(tool name, actions)`` for every tool name more than one action (or the shim) maps to."""
    by_name: dict[str, list[str]] = {}
    for action in sorted(actions):
        by_name.setdefault(tool_name(action), []).append(action)
    return [
        (name, names)
        for name, names in sorted(by_name.items())
        if len(names) > 1 or name == STATUS_TOOL
    ]


def portability_problems(pattern: str) -> list[str]:
    """Constructs of ``pattern`` that ECMA-262 lacks or reads differently, one line each.

    A small scanner, not a parser: it tracks escapes and character classes, which is enough
    to find ``(?P<…>``/``(?P=…)``, ``\\A``/``\\Z``/``\\z``, inline flags, comments,
    conditionals, atomic groups and possessive quantifiers.
    """
    found: dict[str, None] = {}  # ordered set
    i, n, in_class = 0, len(pattern), False
    prev_quantifier = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt in ("A", "Z", "z"):
                found[f"\\{nxt} (use ^ and $)"] = None
            i += 2
            prev_quantifier = False
            continue
        if in_class:
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":  # a literal ] first in a class
                i += 1
            prev_quantifier = False
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 :]
            if rest.startswith(("P<", "P=", "P>")):
                found["(?P<name>…) / (?P=name) named groups (use (?<name>…) and \\k<name>)"] = None
            elif rest.startswith(">"):
                found["atomic groups (?>…)"] = None
            elif rest.startswith("("):
                found["conditional groups (?(…)…)"] = None
            elif rest.startswith("#"):
                found["comments (?#…)"] = None
            elif _INLINE_FLAG.match(pattern, i) and not rest.startswith((":", ")")):
                found["inline flags such as (?i) or (?i:…)"] = None
            i += 2
            prev_quantifier = False
            continue
        if c in "*+?":
            if prev_quantifier and c == "+":
                found["possessive quantifiers (*+, ++, ?+, {m,n}+)"] = None
                prev_quantifier = False
            else:
                prev_quantifier = True
            i += 1
            continue
        if c == "{":
            m = re.match(r"\{[0-9]*(?:,[0-9]*)?\}", pattern[i:])
            if m:
                i += m.end()
                prev_quantifier = True
                continue
        prev_quantifier = False
        i += 1
    return list(found)


def accepts_integer(pattern: str) -> bool:
    """True when every string the pattern fully matches is a run of ASCII digits."""
    return bool(_DIGITS_ONLY.fullmatch(pattern)) and not re.fullmatch(pattern, "")


def _anchored(pattern: str) -> str:
    """The pattern as a JSON Schema search that means what the daemon's fullmatch means."""
    if (
        pattern.startswith("^")
        and pattern.endswith("$")
        and not pattern.endswith("\\$")
        and "|" not in pattern
    ):
        return pattern
    return f"^(?:{pattern})$"


def param_schema(pattern: str) -> dict[str, object]:
    """The JSON Schema of one parameter with this (portable) pattern.

    All-digit patterns also accept a JSON integer (models send ``5`` for ``^[0-9]+$``); the
    shim turns it into its decimal text, which the daemon then checks against the pattern.
    """
    text: dict[str, object] = {"type": "string", "pattern": _anchored(pattern)}
    if accepts_integer(pattern):
        # anyOf, not "type": [...]: strict validators (ajv's strictTypes) refuse union types
        return {
            "anyOf": [text, {"type": "integer", "minimum": 0}],
            "description": "digits only; a JSON integer is accepted too",
        }
    return text

"""The policy as text: ``[[callers]]`` and ``[actions]`` rendered as TOML, parsed back, hashed.

Owns the canonical rendering that ``aegisctl policy show`` prints and ``aegisctl policy
propose`` accepts as is (``render_policy``), the policy's hash (``policy_sha256``: SHA-256 of
that canonical text, so one policy has one hash whatever its formatting or comments), and
``parse_policy``: text that holds only those two tables, combined with the rest of a config.
A proposal that carries ``[daemon]``, ``[auth0]`` or ``[secrets]`` is refused: those stay
root's. Pure code: no I/O, no clock. Semantic checks stay in ``policy.compile_policy``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from aegisd.config import ActionSpec, CallerRule, Config, parse_config
from aegisd.errors import ConfigError

__all__ = ["POLICY_TABLES", "parse_policy", "policy_sha256", "render_policy"]

POLICY_TABLES: Final = frozenset({"callers", "actions"})
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    # JSON string escapes are TOML basic-string escapes; TOML also forbids a raw DEL
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value else "nan"  # repr(inf) == "inf", valid TOML
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")  # pragma: no cover


# always written, default or not: what a reviewer must see for every action
_ALWAYS: Final = frozenset({"approval", "delivery"})


def _non_default(
    obj: msgspec.Struct, always: frozenset[str] = frozenset()
) -> list[tuple[str, object]]:
    """(name, value) of the fields that differ from their default, in declaration order."""
    out: list[tuple[str, object]] = []
    for f in msgspec.structs.fields(obj):
        value = getattr(obj, f.name)
        if f.name in always:
            out.append((f.name, value))
            continue
        if f.default is not msgspec.NODEFAULT:
            default = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            default = msgspec.NODEFAULT
        if value != default:
            out.append((f.name, value))
    return out


def render_policy(callers: Sequence[CallerRule], actions: Mapping[str, ActionSpec]) -> str:
    """The canonical TOML of a policy: caller rules in order (first match wins), actions by
    name, only the keys that differ from their defaults (plus every action's approval and
    delivery, which a reviewer must always see)."""
    lines: list[str] = []
    for rule in callers:
        lines.append("[[callers]]")
        lines += [f"{name} = {_value(v)}" for name, v in _non_default(rule)]
        lines.append("")
    for name in sorted(actions):
        head = f"actions.{_key(name)}"
        lines.append(f"[{head}]")
        tables: list[tuple[str, msgspec.Struct]] = []
        for field_name, v in _non_default(actions[name], _ALWAYS):
            if isinstance(v, msgspec.Struct):
                tables.append((field_name, v))
            else:
                lines.append(f"{field_name} = {_value(msgspec.to_builtins(v))}")
        lines.append("")
        for field_name, sub in tables:
            lines.append(f"[{head}.{field_name}]")
            lines += [f"{k} = {_value(msgspec.to_builtins(v))}" for k, v in _non_default(sub)]
            lines.append("")
    return "\n".join(lines)


def policy_sha256(callers: Sequence[CallerRule], actions: Mapping[str, ActionSpec]) -> str:
    """SHA-256 (hex) of ``render_policy``: what ``policy show``, the audit and the phone cite."""
    return hashlib.sha256(render_policy(callers, actions).encode("utf-8")).hexdigest()


def parse_policy(text: str, base: Config, source: str = "<proposal>") -> Config:
    """``base`` with its caller rules and actions replaced by those in ``text``.

    Raises ``ConfigError`` (every problem, each naming ``source``) when ``text`` is not TOML,
    carries a table other than ``[[callers]]`` and ``[actions]``, or does not decode. The
    result still has to pass ``compile_policy``.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(problems=[f"{source}: not valid TOML: {exc}"]) from None
    foreign = sorted(set(raw) - POLICY_TABLES)
    if foreign:
        raise ConfigError(
            problems=[
                f"{source}: key {key}: a policy carries only [[callers]] and [actions]; "
                "daemon, Auth0 and secrets settings stay in root's config"
                for key in foreign
            ]
        )
    tables = parse_config(text, source)
    return msgspec.structs.replace(
        base, callers=tables.callers, actions=tables.actions, source=source
    )

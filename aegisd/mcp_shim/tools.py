"""Which tools aegis-mcp offers, and what each looks like to a host.

Pure code (the MCP SDK is imported only inside ``ActionTool.as_mcp``): the plan of tools from
the daemon's ``ActionInfo`` list, each tool's description, input schema, ``outputSchema``,
title and annotations, and the mapping of tool arguments onto action parameters. It must not
talk to the daemon or hold any state beyond the plan it returns.

Annotations are derived from the proxy request and the approval, then overridden by the
policy's own ``annotations``: ``readOnlyHint`` for GET without approval; ``destructiveHint``
for DELETE, POST, PUT and PATCH; ``idempotentHint`` for GET, PUT and DELETE;
``openWorldHint`` always (the daemon calls an outside API).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aegisd import wire
from aegisd.errors import InvalidParams
from aegisd.host_schema import STATUS_TOOL, tool_name
from aegisd.mcp_results import PROXY_OUTPUT_SCHEMA

if TYPE_CHECKING:
    import mcp_types

__all__ = ["ActionTool", "plan_tools", "split_arguments", "status_tool", "tools_signature"]

log = logging.getLogger("aegisd.mcp_shim")

_HINTS: Final = {
    "read_only": "readOnlyHint",
    "destructive": "destructiveHint",
    "idempotent": "idempotentHint",
    "open_world": "openWorldHint",
}


@dataclass(frozen=True)
class ActionTool:
    """One exposed tool and the action behind it."""

    name: str
    action: wire.ActionInfo

    @property
    def needs_approval(self) -> bool:
        return self.action.approval == "ciba"

    def description(self) -> str:
        text = self.action.description or f"aegisd action {self.action.name}"
        if self.needs_approval:
            text += (
                " (needs the person's approval on their phone; the call waits for it, and "
                "if it returns approval_pending, call again with the same arguments)"
            )
        return text

    def input_schema(self) -> dict[str, object]:
        schema = dict(self.action.params_schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return schema

    def hints(self) -> dict[str, bool]:
        """The four MCP hints, keyed by their policy names (``read_only``…)."""
        method = self.action.method.upper()
        read_only = method in ("GET", "HEAD") and not self.needs_approval
        derived = {
            "read_only": read_only,
            "destructive": not read_only and method in ("DELETE", "POST", "PUT", "PATCH"),
            "idempotent": method in ("GET", "HEAD", "PUT", "DELETE"),
            "open_world": True,
        }
        derived.update({k: v for k, v in self.action.annotations.items() if k in _HINTS})
        return derived

    def title(self) -> str:
        return self.action.title or self.action.name

    def as_mcp(self, *, tasks: bool) -> mcp_types.Tool:
        import mcp_types

        hints = {_HINTS[k]: v for k, v in self.hints().items()}
        return mcp_types.Tool(
            name=self.name,
            title=self.title(),
            description=self.description(),
            input_schema=self.input_schema(),
            output_schema=PROXY_OUTPUT_SCHEMA,
            annotations=mcp_types.ToolAnnotations(title=self.title(), **hints),
            execution=(
                mcp_types.ToolExecution(task_support="optional")
                if tasks and self.needs_approval
                else None
            ),
        )


def status_tool(problem: str) -> mcp_types.Tool:
    """The one tool offered while aegisd cannot be used."""
    import mcp_types

    return mcp_types.Tool(
        name=STATUS_TOOL,
        title="Aegis status",
        description=(
            f"aegisd cannot be used right now ({problem}). Call this tool to check again "
            "once it has been fixed."
        ),
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        annotations=mcp_types.ToolAnnotations(
            title="Aegis status",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )


def plan_tools(actions: Iterable[wire.ActionInfo]) -> dict[str, ActionTool]:
    """Tools for the actions a caller may use: proxy delivery only, never ``approval = deny``.

    ``policy check`` refuses actions whose tool names collide, so names never depend on which
    other actions exist; should a daemon send such a pair anyway, the first (by name) wins.
    """
    tools: dict[str, ActionTool] = {}
    for info in sorted(actions, key=lambda a: a.name):
        if info.delivery != "proxy" or info.approval == "deny":
            continue
        name = tool_name(info.name)
        if name in tools or name == STATUS_TOOL:
            log.warning("action %r clashes with tool %r: not offered", info.name[:64], name)
            continue
        tools[name] = ActionTool(name, info)
    return tools


def tools_signature(tools: Mapping[str, ActionTool], problem: str | None) -> str:
    """What a host's tool list depends on, as text: equal signatures need no list_changed."""
    if problem is not None:
        return f"problem:{problem}"
    return json.dumps(
        [[name, wire_info(tool.action)] for name, tool in sorted(tools.items())],
        sort_keys=True,
    )


def wire_info(info: wire.ActionInfo) -> object:
    import msgspec

    return msgspec.to_builtins(info)


def _integer_ok(action: wire.ActionInfo, key: str) -> bool:
    props = action.params_schema.get("properties")
    prop = props.get(key) if isinstance(props, dict) else None
    choices = prop.get("anyOf") if isinstance(prop, dict) else None
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("type") == "integer" for c in choices
    )


def split_arguments(
    action: wire.ActionInfo, arguments: Mapping[str, object]
) -> tuple[dict[str, str], bytes | None]:
    """Tool arguments → (action params as text, request body).

    Strings pass as they are; a non-negative integer only where the schema says so
    (all-digit patterns); anything else is ``invalid_params``, as the schema promises.
    """
    params: dict[str, str] = {}
    body: bytes | None = None
    for key, value in arguments.items():
        if value is None:
            continue
        if key == "body" and action.body:
            text = value if isinstance(value, str) else json.dumps(value)
            body = text.encode("utf-8")
        elif isinstance(value, str):
            params[key] = value
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= 0
            and _integer_ok(action, key)
        ):
            params[key] = str(value)
        else:
            raise InvalidParams(f"parameter {key[:64]!r} must be a string")
    return params, body

"""The policy, compiled: caller rules, actions, parameter checks, request digests.

Pure code, no I/O. ``compile_policy`` turns a loaded ``Config`` into a ``Policy`` or raises
``ConfigError`` listing *every* problem with its location (``aegisctl policy check`` prints
them). What loads but deserves attention (a phone text that may shorten parameters, a
remembered approval wider than its message) is in ``Policy.warnings``, which ``policy
check`` prints and the daemon logs at every load. A ``Policy`` is immutable: SIGHUP builds a
new one and swaps it atomically, and a request keeps the ``Policy`` it started with until it
finishes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from aegisd.auth0.issuer import issuer_from_config, management_audience
from aegisd.binding import render_binding_message, template_problems, template_warnings
from aegisd.config import ActionSpec, CallerRule, Config
from aegisd.errors import CallerNotAllowed, ConfigError, InvalidParams, UnknownAction
from aegisd.frame_budget import frame_problems
from aegisd.host_schema import param_schema, portability_problems, tool_name_collisions
from aegisd.loopback import is_loopback_host

__all__ = [
    "CompiledAction",
    "Policy",
    "compile_policy",
    "is_loopback_host",
    "request_digest",
]

_ACTION_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PARAM_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_PARAM_LEN: Final = 4096
_MAX_BODY_IN_FRAME: Final = 56 * 1024
_MAX_DECODES: Final = 8
# names the SDK and the shim use for their own arguments
_RESERVED_PARAMS: Final = frozenset({"body", "on_pending", "action", "claim", "max_wait"})
# answer headers that carry credentials or sessions: never handed to the agent
_SECRET_RESPONSE_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "set-cookie",
        "set-cookie2",
        "cookie",
        "www-authenticate",
        "proxy-authenticate",
        "authentication-info",
        "proxy-authentication-info",
    }
)


def _placeholders(template: str) -> list[str]:
    names: list[str] = []
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None:
            names.append(field_name)
    return names


def _is_dot_segment(value: str) -> bool:
    """Whether ``value``, percent-decoded as often as a server might (``%252e`` -> ``%2e`` ->
    ``.``), contains a ``.`` or ``..`` segment between ``/`` or ``\\`` separators. We send it
    encoded, but a server or proxy that decodes and then normalises would climb the path."""
    for _ in range(_MAX_DECODES):
        segments = re.split(r"[/\\]", value)
        if any(seg in (".", "..") for seg in segments):
            return True
        decoded = unquote(value)
        if decoded == value:
            return False
        value = decoded
    return True  # still changing after that many rounds: no honest value does that


def request_digest(
    caller: str, action: str, params: Mapping[str, str], body: bytes | None = None
) -> str:
    """SHA-256 over (caller, action, canonical params, body): what an approval is bound to."""
    doc: dict[str, object] = {
        "caller": caller,
        "action": action,
        "params": dict(sorted(params.items())),
    }
    if body is not None:  # absent key, not null: digests of body-less requests stay stable
        doc["body_sha256"] = hashlib.sha256(body).hexdigest()
    canon = json.dumps(
        doc,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class CompiledAction:
    name: str
    spec: ActionSpec
    patterns: Mapping[str, re.Pattern[str]]

    def check_params(self, params: Mapping[str, str]) -> dict[str, str]:
        """Every declared parameter present and matching; nothing undeclared. Returns a copy."""
        problems: list[str] = []
        for key in params:
            if key not in self.patterns:
                problems.append(f"unexpected parameter {key!r}")
        for key, pattern in self.patterns.items():
            value = params.get(key)
            if value is None:
                problems.append(f"missing parameter {key!r}")
            elif len(value) > _MAX_PARAM_LEN or not pattern.fullmatch(value):
                # never echo the value: it comes from the agent and may be hostile
                problems.append(f"parameter {key!r} does not match {pattern.pattern!r}")
        if problems:
            raise InvalidParams("; ".join(sorted(problems)))
        return dict(params)

    def binding_message(self, params: Mapping[str, str], digest: str) -> str:
        return render_binding_message(self.spec.binding_message, params, digest)

    def params_schema(self) -> dict[str, object]:
        """JSON Schema for the parameters, so the shim can expose the action as a tool."""
        props: dict[str, object] = {
            name: param_schema(pat.pattern) for name, pat in self.patterns.items()
        }
        if self.spec.request is not None and self.spec.request.body:
            props["body"] = {
                "type": "string",
                "description": "request body sent to the API (at most "
                f"{self.spec.request.max_request_body} bytes)",
            }
        return {
            "type": "object",
            "properties": props,
            "required": sorted(self.patterns),
            "additionalProperties": False,
        }

    def render_url(self, params: Mapping[str, str]) -> str:
        """The proxy URL with every parameter percent-encoded (no path or query injection)."""
        assert self.spec.request is not None
        template = self.spec.request.url
        in_path = _placeholders(template.split("?", 1)[0].split("#", 1)[0])
        for name in in_path:
            if _is_dot_segment(params.get(name, "")):
                # never echo the value: it comes from the agent and may be hostile
                raise InvalidParams(
                    f"parameter {name!r} would be a '.' or '..' path segment once decoded"
                )
        safe = {k: quote(v, safe="") for k, v in params.items()}
        url = template.format_map(safe)
        # HTTP clients resolve "." and ".." path segments (RFC 3986 5.2.4), so such a value
        # would climb out of the template's path (/repos/o/.. -> /repos).
        if any(seg in (".", "..") for seg in urlsplit(url).path.split("/")):
            raise InvalidParams("a parameter may not be '.' or '..' in the URL path")
        return url


@dataclass(frozen=True)
class Policy:
    callers: tuple[CallerRule, ...]
    actions: Mapping[str, CompiledAction]
    source: str = ""
    # things that load but deserve the author's attention (``policy check`` prints them, the
    # daemon logs them at every load), each naming the file and key like a problem does
    warnings: tuple[str, ...] = ()

    def action_for(self, rule: CallerRule, name: str) -> CompiledAction:
        """The action if it exists and the caller's rule allows it, else a typed error."""
        action = self.actions.get(name)
        if action is None:
            raise UnknownAction(f"no action named {name!r}"[:200])
        if not self.allows(rule, name):
            raise CallerNotAllowed(f"caller {rule.name!r} may not use {name!r}")
        return action

    @staticmethod
    def allows(rule: CallerRule, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in rule.actions)

    def actions_for(self, rule: CallerRule) -> list[CompiledAction]:
        return [a for n, a in sorted(self.actions.items()) if self.allows(rule, n)]


def _action_warnings(spec: ActionSpec, where: str) -> list[str]:
    warnings: list[str] = []
    if spec.approval != "ciba" or not spec.binding_message:
        return warnings
    for w in template_warnings(spec.binding_message, dict(spec.params)):
        warnings.append(f"{where}.binding_message: {w}")
    rem = spec.remember
    if rem is not None and rem.scope == "action" and rem.ttl > 0:
        try:
            named = sorted(set(_placeholders(spec.binding_message)) & set(spec.params))
        except ValueError:
            named = []
        if named:
            warnings.append(
                f"{where}.remember: scope 'action' lets one approval serve any "
                f"{', '.join('{' + n + '}' for n in named)} for {rem.ttl:g} s, though the "
                "message the person approved named particular values; use scope 'request'"
            )
    return warnings


def _check_action(name: str, spec: ActionSpec, where: str, cfg: Config) -> list[str]:
    problems: list[str] = []
    if not _ACTION_NAME.match(name):
        problems.append(f"{where}: action name must be letters, digits, '.', '_' or '-'")
    for pname in spec.params:
        if not _PARAM_NAME.match(pname) or pname in _RESERVED_PARAMS:
            problems.append(f"{where}.params.{pname}: not a valid parameter name")
    cred = spec.credential
    if spec.approval == "ciba":
        if cfg.auth0 is None:
            problems.append(f"{where}.approval: 'ciba' needs an [auth0] section")
        if not spec.binding_message:
            problems.append(f"{where}.binding_message: required when approval is 'ciba'")
        else:
            for p in template_problems(spec.binding_message, list(spec.params), dict(spec.params)):
                problems.append(f"{where}.binding_message: {p}")
    if cred.kind in ("ciba_token", "token_vault") and spec.approval != "ciba":
        problems.append(
            f"{where}.credential.kind: {cred.kind!r} comes from an approval; set approval = 'ciba'"
        )
    if cred.kind == "token_vault" and not cred.connection:
        problems.append(f"{where}.credential.connection: required for kind 'token_vault'")
    if (
        cred.kind == "token_vault"
        and "management" in cred.order
        and cfg.auth0 is not None
        and cfg.auth0.management is None
        and cred.order == ["management"]
    ):
        problems.append(f"{where}.credential.order: 'management' needs [auth0.management]")
    if spec.delivery == "token" and cred.kind == "none" and spec.approval != "deny":
        problems.append(f"{where}.delivery: 'token' needs a credential kind other than 'none'")
    if spec.delivery == "proxy" and spec.approval != "deny":
        req = spec.request
        if req is None:
            problems.append(f"{where}.request: required when delivery is 'proxy'")
        else:
            problems.extend(_check_request(where, spec))
    elif spec.request is not None and spec.delivery == "token":
        problems.append(f"{where}.request: only used with delivery = 'proxy'")
    if spec.remember is not None:
        if spec.remember.ttl < 0:
            problems.append(f"{where}.remember.ttl: must be >= 0")
        if spec.remember.ttl > cfg.daemon.remember_max_ttl:
            problems.append(
                f"{where}.remember.ttl: {spec.remember.ttl} exceeds daemon.remember_max_ttl "
                f"({cfg.daemon.remember_max_ttl})"
            )
    return problems


def _check_request(where: str, spec: ActionSpec) -> list[str]:
    assert spec.request is not None
    req = spec.request
    problems: list[str] = []
    try:
        names = _placeholders(req.url)
    except ValueError as exc:
        return [f"{where}.request.url: bad template ({exc})"]
    for n in names:
        if n not in spec.params:
            problems.append(f"{where}.request.url: placeholder {{{n}}} is not a declared param")
    # the scheme and host must be fixed text: a parameter can never choose where we connect
    head = req.url.split("/", 3)
    authority = "/".join(head[:3])
    if "{" in authority:
        problems.append(f"{where}.request.url: placeholders are not allowed in scheme or host")
    parts = urlsplit(req.url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append(f"{where}.request.url: must be an absolute http(s) URL")
    elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
        problems.append(f"{where}.request.url: plain http is only allowed to a loopback host")
    for h in req.headers:
        if h.lower() in ("authorization", "host", "content-length", "cookie"):
            problems.append(f"{where}.request.headers.{h}: set by the daemon, not the policy")
    for h in req.response_headers:
        if h.lower() in _SECRET_RESPONSE_HEADERS:
            problems.append(
                f"{where}.request.response_headers: {h!r} carries credentials or sessions "
                "and is never returned to the caller"
            )
    if req.max_request_body < 0 or req.max_response_body < 1 or req.timeout <= 0:
        problems.append(f"{where}.request: limits must be positive")
    # request and answer each travel in one 64 KiB frame with their envelope
    if req.max_request_body > _MAX_BODY_IN_FRAME or req.max_response_body > _MAX_BODY_IN_FRAME:
        problems.append(
            f"{where}.request: max_request_body and max_response_body may be at most "
            f"{_MAX_BODY_IN_FRAME} bytes (one 64 KiB frame with its envelope)"
        )
    elif req.max_response_body > 0:
        problems.extend(
            f"{where}.request: {p}"
            for p in frame_problems(req.response_headers, req.max_response_body)
        )
    return problems


def _host_problems(cfg: Config, src: str) -> list[str]:
    """What would break MCP hosts: patterns ECMA-262 reads differently, clashing tool names."""
    problems: list[str] = []
    for name, spec in cfg.actions.items():
        for pname, pat in spec.params.items():
            for what in portability_problems(pat):
                problems.append(
                    f"{src}: key actions.{name}.params.{pname}: not portable to MCP hosts "
                    f"(JavaScript regular expressions): {what}"
                )
    for tool, actions in tool_name_collisions(cfg.actions):
        names = ", ".join(repr(a) for a in actions)
        problems.append(
            f"{src}: key actions: {names} would all be the MCP tool {tool!r} "
            "(rename so the names differ in letters, digits, '_' or '-')"
            if len(actions) > 1
            else f"{src}: key actions: {names} would be the MCP tool {tool!r}, aegis-mcp's own"
        )
    return problems


def compile_policy(cfg: Config) -> Policy:
    """Validate callers and actions; raise ``ConfigError`` with every problem found."""
    src = cfg.source or "<config>"
    problems: list[str] = []
    names: set[str] = set()
    for i, rule in enumerate(cfg.callers):
        where = f"{src}: key callers[{i}]"
        if rule.name in names:
            problems.append(f"{where}.name: duplicate caller name {rule.name!r}")
        names.add(rule.name)
        if not rule.actions and not rule.operator:
            problems.append(f"{where}.actions: lists no actions (the rule would allow nothing)")
        if rule.operator and not (rule.exe or rule.sha256 or rule.argv or rule.uids):
            # it would match every process, the agent included (issue 13 finding 5)
            problems.append(
                f"{where}.operator: an operator rule must state a condition (argv, exe, "
                'sha256 or uids), e.g. argv = ["*/aegisctl *"]; it would match every process'
            )
        for pat in rule.actions:
            if not any(fnmatch.fnmatchcase(a, pat) for a in cfg.actions):
                problems.append(f"{where}.actions: {pat!r} matches no defined action")
    if cfg.auth0 is not None:
        try:
            issuer_from_config(cfg.auth0)
            if cfg.auth0.management is not None:
                management_audience(cfg.auth0)  # a custom domain needs auth0.tenant_domain
        except ConfigError as exc:
            problems.append(f"{src}: key {exc.message}")
    compiled: dict[str, CompiledAction] = {}
    warnings: list[str] = []
    for name, spec in cfg.actions.items():
        where = f"{src}: key actions.{name}"
        problems.extend(_check_action(name, spec, where, cfg))
        warnings.extend(_action_warnings(spec, where))
        patterns: dict[str, re.Pattern[str]] = {}
        for pname, pat in spec.params.items():
            try:
                patterns[pname] = re.compile(pat)
            except re.error as exc:
                problems.append(f"{where}.params.{pname}: invalid regular expression ({exc})")
        compiled[name] = CompiledAction(name, spec, MappingProxyType(patterns))
    problems.extend(_host_problems(cfg, src))
    if problems:
        raise ConfigError(problems=problems)
    return Policy(tuple(cfg.callers), MappingProxyType(compiled), src, tuple(warnings))

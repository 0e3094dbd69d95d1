"""The JSON every ``aegisctl ... --json`` prints, as msgspec Structs: the schema's one source.

Each command that reports something builds one of these and hands it to ``output.emit``;
``docs/CLI.md`` documents them (``python -m aegisctl.outputs`` prints that section, and a test
keeps the two equal). New fields get defaults; existing fields are never retyped, as on the
wire. Every object has ``ok``; a failure prints ``ErrorOutput`` instead, whatever the command.
This module holds types only: no I/O, no formatting for people.
"""

from __future__ import annotations

import sys
from typing import Final, Literal

import msgspec
from msgspec import inspect as mi

from aegisd.config_check import Problem

__all__ = [
    "OUTPUTS",
    "AuditRecordOutput",
    "AuditVerifyOutput",
    "BindingPreview",
    "CancelOutput",
    "CheckOutput",
    "DevTenantAnswerOutput",
    "DoctorOutput",
    "ErrorInfo",
    "ErrorOutput",
    "LockOutput",
    "PeerOutput",
    "PendingItem",
    "PendingOutput",
    "PolicyCheckOutput",
    "ProposeOutput",
    "ReloadOutput",
    "ResolvedExecutables",
    "SecretState",
    "SecretsStatusOutput",
    "ServiceCommandResult",
    "ServiceFileState",
    "ServiceStatusOutput",
    "StatusOutput",
    "markdown",
]

Scalar = str | int | float | bool | None


class _Out(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Strict on decode, so a test decoding real output catches any undocumented field."""


class ErrorInfo(_Out, kw_only=True, forbid_unknown_fields=True):
    code: str
    """Stable machine code: a wire code (docs/SDK_AND_SHIM.md) or usage/failed/error."""
    message: str
    """One sentence for people."""
    exit_code: int
    """The process's exit status (table below)."""


class ErrorOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = False
    error: ErrorInfo


class PeerOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    uid: int
    pid: int
    exe: str = ""
    caller: str | None = None
    """The caller rule that matched, or null."""
    exe_verified: bool = True
    """False when the daemon could not read the peer's executable (another uid without
    CAP_SYS_PTRACE, separated mode): exe is then "" and exe/sha256 rules do not match."""


class StatusOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    daemon_version: str
    pid: int
    uptime: float
    """Seconds since the daemon started."""
    socket: str
    config: str
    """The config file the daemon loaded ("" for defaults)."""
    peers: list[PeerOutput] = []
    """Connected processes: those of the asker's uid; every one for an operator."""
    pending: int = 0
    audit_log: str = ""
    audit_ok: bool = True
    audit_detail: str = ""
    auth0: dict[str, Scalar] = {}
    """Auth0 client health (issuer, discovery, jwks_keys, ...), values with their own types."""
    actions: int = 0
    callers: int = 0
    missing_secrets: list[str] = []
    """Secrets the config needs that the backend did not have when the daemon started."""
    mode: str = ""
    """"separated" (aegisd runs as its own account) or "same-uid" (as the person)."""
    daemon_uid: int = -1
    daemon_user: str = ""
    hardening: str = ""
    """Whether same-uid processes can read the daemon's memory, e.g. "not dumpable
    (PR_SET_DUMPABLE 0)"."""
    policy_sha256: str = ""
    """SHA-256 of the active policy, as `aegisctl policy show` prints it."""
    policy_source: str = ""
    """"config" or the [daemon] policy_file path."""
    policy_generation: int = 0
    """0 at start, bumped by every reload and applied proposal."""
    audit_tip_seq: int = 0
    """The last record the daemon wrote, from its memory: a log that ends before it was
    truncated (`audit verify` compares)."""
    audit_tip_hash: str = ""
    audit_pruned: int = 0
    """Records deleted by rotation ([audit] keep_files), as the chain's `pruned` record says."""
    audit_verifying: bool = False
    """The daemon's incremental check has not caught up yet (a large log at start)."""
    audit_bytes_per_hour: float = 0.0
    """How fast the log grew since the daemon started (0 in its first minute)."""
    audit_suppressed: int = 0
    """Refusals over the per-peer budget, counted in `refusals_suppressed` summaries."""
    audit_warnings: list[str] = []
    """Pruned history, fast growth, suppressed refusals; `doctor` shows them too."""


class PendingItem(_Out, kw_only=True, forbid_unknown_fields=True):
    pending_id: str
    action: str
    caller: str
    binding_message: str
    digest: str
    started_at: float
    """Unix time."""
    expires_at: float
    """Unix time."""
    waiters: int = 1
    params: dict[str, str] = {}
    """The full parameters, to check against the phone's text."""
    state: str = "pending"
    """pending, then the answer held for its requester: approved or an error code."""


class PendingOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    pending: list[PendingItem] = []
    scope: str = "all"
    """Whose approvals are listed: all (aegisctl matches an operator caller rule), own (only
    this process's; it matches another caller rule), none (no caller rule matches it)."""
    note: str = ""
    """Why the list is limited and how to see everything; empty for scope all."""


class CancelOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    cancelled: str
    """The pending_id withdrawn."""


class LockOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    cancelled: int
    """Pending approvals cancelled."""
    forgotten: int
    """Remembered approvals forgotten."""


class ReloadOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    """False when the config is invalid: the daemon keeps its current policy (exit 78)."""
    generation: int
    """The policy generation now active (unchanged when the reload failed)."""
    problems: list[str] = []
    """Why the reload failed, one line per problem."""
    policy_sha256: str = ""
    """sha256 of the active policy's canonical text."""


class ProposeOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    """False when the proposal was invalid (nothing proposed, exit 78)."""
    applied: bool
    """True when the person approved and the policy is now active; false when unchanged."""
    sha256: str = ""
    """sha256 of the proposed (and, if applied, active) policy."""
    summary: str = ""
    """The change in one line, as the phone showed it."""
    changes: list[str] = []
    """One line per action or caller rule added, removed or changed."""
    problems: list[str] = []
    """Why the proposal was refused, one line per problem."""
    generation: int = 0
    """The policy generation after the proposal."""


class AuditRecordOutput(msgspec.Struct, kw_only=True):
    """One line of ``audit tail --json``: the record as stored (every field kept)."""

    seq: int
    ts: float
    """Unix time."""
    event: str
    prev: str
    """Hash of the previous record."""
    hash: str
    """The fields of the event itself follow (see docs/OPERATIONS.md, audit log)."""


class AuditVerifyOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    path: str
    """The log verified (the daemon's own unless --file)."""
    records: int
    files: int
    problems: list[str] = []
    warnings: list[str] = []
    pruned: int = 0
    """Records before the first kept one, deleted by rotation and vouched for by a `pruned`
    record ("N records pruned", not "intact")."""
    anchor_seq: int = 0
    """The tip the chain was compared with: the running daemon's, else `<log>.anchor`
    (0: none); a chain that ends before it was truncated."""


class BindingPreview(_Out, kw_only=True, forbid_unknown_fields=True):
    action: str
    template: str
    typical: str
    """The phone text with each parameter shown by its name."""
    longest: str
    """The phone text with the longest values the parameter patterns allow."""


class ResolvedExecutables(_Out, kw_only=True, forbid_unknown_fields=True):
    interpreter: str
    """realpath of the Python running aegisctl (what a caller rule's exe must match)."""
    aegis_mcp: str | None = None
    """Where aegis-mcp is, or null."""
    aegis_mcp_interpreter: str | None = None
    """realpath of the interpreter aegis-mcp runs with (its #! line)."""


class PolicyCheckOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    file: str
    actions: int = 0
    callers: int = 0
    problems: list[Problem] = []
    warnings: list[str] = []
    """The policy's warnings (phone text that may shorten parameters, a wide remember)."""
    binding_messages: list[BindingPreview] = []
    exe_warnings: list[str] = []
    """Caller-rule exe patterns that match no file here; aegis-mcp here matching no rule."""
    resolved: ResolvedExecutables


class CheckOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    name: str
    verdict: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""
    """A command or step that fixes it ("" when ok)."""


class DoctorOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    """False when any check failed."""
    checks: list[CheckOutput]


class SecretState(_Out, kw_only=True, forbid_unknown_fields=True):
    present: bool
    needed: bool
    """Whether the config asks for it."""
    systemd_credential: bool = False
    """Separated mode: stored as an encrypted systemd credential."""


class SecretsStatusOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    backend: str
    detail: str
    service: str | None = None
    secrets: dict[str, SecretState]


class ServiceFileState(_Out, kw_only=True, forbid_unknown_fields=True):
    path: str
    state: Literal["installed", "not installed", "differs"]
    """differs: not what `aegisctl service install` writes now."""


class ServiceCommandResult(_Out, kw_only=True, forbid_unknown_fields=True):
    argv: list[str]
    exit_code: int | None = None
    """null with --dry-run (not run)."""
    output: str = ""


class ServiceStatusOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool
    """Installed and running (exit 0); else exit 1 (not installed) or 3 (not running)."""
    files: list[ServiceFileState]
    commands: list[ServiceCommandResult]


class DevTenantAnswerOutput(_Out, kw_only=True, forbid_unknown_fields=True):
    ok: bool = True
    status: str
    """approved or denied."""
    id: str
    """The request answered."""


# command -> its output (in docs order); "audit tail" prints one object per line
OUTPUTS: Final[dict[str, type[msgspec.Struct]]] = {
    "status": StatusOutput,
    "pending": PendingOutput,
    "cancel": CancelOutput,
    "lock": LockOutput,
    "reload": ReloadOutput,
    "policy propose": ProposeOutput,
    "audit tail": AuditRecordOutput,
    "audit verify": AuditVerifyOutput,
    "policy check": PolicyCheckOutput,
    "doctor": DoctorOutput,
    "secrets status": SecretsStatusOutput,
    "service status": ServiceStatusOutput,
    "dev-tenant approve | deny": DevTenantAnswerOutput,
    "(any command, on failure)": ErrorOutput,
}


def _type_name(t: mi.Type) -> str:
    match t:
        case mi.StrType():
            return "string"
        case mi.BoolType():
            return "boolean"
        case mi.IntType():
            return "integer"
        case mi.FloatType():
            return "number"
        case mi.NoneType():
            return "null"
        case mi.LiteralType(values=values):
            return " \\| ".join(f'"{v}"' for v in values)
        case mi.ListType(item_type=item):
            return f"array of {_type_name(item)}"
        case mi.DictType(value_type=value):
            return f"object of {_type_name(value)}"
        case mi.StructType(cls=cls):
            return f"`{cls.__name__}`"
        case mi.UnionType(types=types):
            return " \\| ".join(_type_name(x) for x in types)
    return "any"


def _field_docs(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Attribute docstrings (the string after a field), read from the source."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _struct_table(cls: type[msgspec.Struct], seen: set[type]) -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    docs = _field_docs(cls)
    lines = [f"`{cls.__name__}`", "", "| field | type | notes |", "|---|---|---|"]
    nested: list[type[msgspec.Struct]] = []
    for f in info.fields:
        note = docs.get(f.name, "")  # every field is always printed, defaults included
        lines.append(f"| `{f.encode_name}` | {_type_name(f.type)} | {note} |")
        nested += _structs_in(f.type)
    if not info.forbid_unknown_fields:
        lines.append("| ... | | every other field of the record |")
    out = [*lines, ""]
    for sub in nested:
        if sub not in seen:
            seen.add(sub)
            out += _struct_table(sub, seen)
    return out


def _structs_in(t: mi.Type) -> list[type[msgspec.Struct]]:
    match t:
        case mi.StructType(cls=cls):
            return [cls]
        case mi.ListType(item_type=item):
            return _structs_in(item)
        case mi.DictType(value_type=value):
            return _structs_in(value)
        case mi.UnionType(types=types):
            return [c for x in types for c in _structs_in(x)]
    return []


def markdown() -> str:
    """The "JSON output" section of docs/CLI.md, generated from the Structs above."""
    out: list[str] = []
    seen: set[type] = set(OUTPUTS.values())
    for command, cls in OUTPUTS.items():
        out += [f"### `{command}`", ""]
        out += _struct_table(cls, seen)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m aegisctl.outputs` refreshes the docs
    sys.stdout.write(markdown())

"""Configuration: the TOML file as msgspec Structs, its loading, and default paths.

This module owns the *shape* of ``aegisd.toml`` (every key is a Struct field here, documented
in ``docs/CONFIG.md``) and turns decoding failures into a ``ConfigError`` that lists every
problem with the file, line, key and what was expected (the walk is ``config_check``'s), plus
what the daemon would refuse later (relative paths, a socket path too long for ``sun_path``).
Semantic checks of the policy (templates, placeholders, binding-message fit) live in
``policy.py``; this module must not perform I/O beyond reading the one file it is asked to
load (through ``trusted_file``, which refuses a file others could have changed), and must
not hold global state.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Final, Literal

import msgspec
import platformdirs

from aegisd.config_check import KeyLines, Problem, key_text, walk
from aegisd.errors import ConfigError
from aegisd.runtime_dir import user_runtime_dir
from aegisd.trusted_file import read_trusted

__all__ = [
    "ActionSpec",
    "AnnotationsSpec",
    "AuditConfig",
    "Auth0Config",
    "CallerRule",
    "Config",
    "CredentialSpec",
    "DaemonConfig",
    "ManagementConfig",
    "RememberSpec",
    "RequestTemplate",
    "SecretsConfig",
    "TokenVaultClientConfig",
    "check_config",
    "default_audit_path",
    "default_config_path",
    "default_socket_path",
    "load_config",
    "max_socket_path_length",
    "parse_config",
    "resolve_config_path",
]

APP: Final = "aegis"


def default_config_path() -> Path:
    """``platformdirs.user_config_dir("aegis")/aegisd.toml``."""
    return Path(platformdirs.user_config_dir(APP)) / "aegisd.toml"


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/aegis/aegisd.sock``, with a quiet fallback (``runtime_dir``)."""
    return user_runtime_dir() / "aegisd.sock"


def default_audit_path() -> Path:
    """``platformdirs.user_state_dir("aegis")/audit.jsonl``."""
    return Path(platformdirs.user_state_dir(APP)) / "audit.jsonl"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config`` wins, then ``AEGIS_CONFIG``, then the platform default."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AEGIS_CONFIG")
    if env:
        return Path(env).expanduser()
    return default_config_path()


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Common options: every section rejects keys it does not know (typos are errors)."""


class DaemonConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    socket: str | None = None
    audit_log: str | None = None
    max_connections: int = 256
    # one process, and one uid, cannot take every slot (issue 13 finding 7; conn_limits.py)
    # room for max_pending_per_caller (32) waiting calls of one shim, one each, plus its Watch
    max_connections_per_peer: int = 40
    max_connections_per_uid: int | None = None  # default: max_connections (no extra cap)
    handshake_timeout: float = 5.0
    idle_timeout: float = 600.0
    # a peer no caller rule matches only inspects (status, lock): it needs no long idle time
    unmatched_idle_timeout: float = 10.0
    allowed_uids: list[int] = []
    max_pending: int = 1024
    max_pending_per_caller: int = 32
    ciba_starts_per_minute: int = 5
    ciba_starts_per_minute_per_caller: int | None = None  # default: 60 % of the above
    remember_max_ttl: float = 3600.0
    audit_rotate_bytes: int = 16 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # separated mode: the group whose members may connect (socket 0660, directory 0750/0710)
    socket_group: str | None = None
    # where an approved ``policy propose`` is kept (separated mode: /var/lib/aegis/policy.toml)
    policy_file: str | None = None


class AuditConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[audit]``: how much one peer's refusals may write, and what rotation keeps."""

    # refusals one peer may have recorded one by one (token bucket); the rest are counted
    # and written as one ``refusals_suppressed`` record per ``summary_interval``; 0 = no limit
    refusals_per_second: float = 2.0
    refusal_burst: int = 20
    summary_interval: float = 10.0
    # rotated files kept; 0 = every file (never delete). Past it the oldest file is pruned
    # and a ``pruned`` record names the first kept sequence number and hash
    keep_files: int = 0
    # ``status`` and ``doctor`` warn when the log grows faster than this since start
    growth_warning_bytes_per_hour: int = 64 * 1024 * 1024


class ManagementConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: str
    client_auth: Literal["client_secret_post", "client_secret_basic", "private_key_jwt"] = (
        "client_secret_post"
    )
    audience: str | None = None  # default https://{domain}/api/v2/


class TokenVaultClientConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: str
    client_auth: Literal["client_secret_post", "client_secret_basic", "private_key_jwt"] = (
        "client_secret_post"
    )


class Auth0Config(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    domain: str | None = None
    issuer: str | None = None
    allow_insecure_http: bool = False
    client_id: str
    client_auth: Literal["client_secret_post", "client_secret_basic", "private_key_jwt"] = (
        "client_secret_post"
    )
    signing_alg: Literal["RS256", "PS256"] = "RS256"
    user_id: str
    audience: str | None = None
    tenant_domain: str | None = None  # canonical *.auth0.com host behind a custom domain
    scopes: list[str] = []  # added to openid on every CIBA request (API permissions)
    requested_expiry: int = 120
    email_channel: bool = False  # allows requested_expiry up to 259200 (Auth0's email channel)
    authorization_details: bool = False
    http_timeout: float = 10.0
    id_token_leeway: float = 30.0
    offline_access: bool = False
    management: ManagementConfig | None = None
    token_vault: TokenVaultClientConfig | None = None


class SecretsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["keyring", "env", "file"] = "keyring"
    service: str = "aegisd"  # keyring only: the service name the entries are stored under
    dir: str | None = None  # file only: default user_state_dir/secrets (see file_store.py)


class CallerRule(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    exe: list[str] = []
    sha256: list[str] = []
    argv: list[str] = []
    uids: list[int] = []
    actions: list[str] = []
    # may list and cancel every caller's pending approvals (aegisctl pending/cancel); see
    # aegisd/daemon/inspection.py and docs/CONFIG.md "Who sees pending approvals"
    operator: bool = False


class CredentialSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["none", "ciba_token", "token_vault"] = "none"
    connection: str | None = None
    order: list[Literal["token_vault", "management"]] = msgspec.field(
        default_factory=lambda: ["token_vault", "management"]
    )
    login_hint: str | None = None
    scopes: list[str] = []  # ciba_token: added to the CIBA scope; token_vault: Token Vault scope


class RequestTemplate(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    headers: dict[str, str] = {}
    response_headers: list[str] = msgspec.field(default_factory=lambda: ["content-type"])
    body: bool = False
    max_request_body: int = 48 * 1024
    max_response_body: int = 56 * 1024  # the answer must fit one 64 KiB frame
    timeout: float = 15.0
    auth_scheme: str = "Bearer"


class RememberSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    scope: Literal["request", "action"] = "request"
    ttl: float = 0.0


class AnnotationsSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MCP tool hints the policy states itself; unset ones are derived (docs/CONFIG.md)."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


class ActionSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
    title: str = ""  # a short human name (MCP tool title)
    annotations: AnnotationsSpec = AnnotationsSpec()
    approval: Literal["none", "ciba", "deny"] = "ciba"
    binding_message: str = ""
    params: dict[str, str] = {}
    credential: CredentialSpec = CredentialSpec()
    delivery: Literal["token", "proxy"] = "proxy"
    request: RequestTemplate | None = None
    remember: RememberSpec | None = None
    scope: str = ""


class Config(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    daemon: DaemonConfig = DaemonConfig()
    audit: AuditConfig = AuditConfig()
    auth0: Auth0Config | None = None
    secrets: SecretsConfig = SecretsConfig()
    callers: list[CallerRule] = []
    actions: dict[str, ActionSpec] = {}
    source: str = ""  # set by the loader: the file this came from (not a TOML key)

    def socket_path(self) -> Path:
        return (
            Path(self.daemon.socket).expanduser() if self.daemon.socket else default_socket_path()
        )

    def audit_path(self) -> Path:
        if self.daemon.audit_log:
            return Path(self.daemon.audit_log).expanduser()
        return default_audit_path()


def max_socket_path_length() -> int:
    """Usable bytes in ``sun_path``: 107 on Linux, 103 on macOS and the BSDs."""
    return 107 if sys.platform.startswith("linux") else 103


_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,200}")  # RFC 6749 §3.3


def _semantic_problems(cfg: Config, source: str, lines: KeyLines) -> list[Problem]:
    """What the types allow but the daemon would refuse (or misuse) later."""
    found: list[Problem] = []

    def add(path: tuple[str | int, ...], message: str, expected: str = "") -> None:
        found.append(
            Problem(
                file=source,
                line=lines.line(path),
                key=key_text(path),
                message=message,
                expected=expected,
            )
        )

    if cfg.auth0 is not None:
        if not cfg.auth0.domain and not cfg.auth0.issuer:
            add(("auth0",), "set either domain or issuer", "domain or issuer")
        a0 = cfg.auth0
        longest = 259200 if a0.email_channel else 300
        if not 1 <= a0.requested_expiry <= longest:
            add(
                ("auth0", "requested_expiry"),
                f"must be 1..{longest} seconds "
                + (
                    "(Auth0's email channel allows at most 72 h)"
                    if a0.email_channel
                    else "(Guardian push allows at most 300; above needs auth0.email_channel)"
                ),
                f"an integer from 1 to {longest}",
            )
        if a0.authorization_details and not a0.audience:
            add(
                ("auth0", "authorization_details"),
                "needs auth0.audience (RAR types are registered on an API)",
                "auth0.audience set",
            )
        for i, scope in enumerate(a0.scopes):
            if not _SCOPE_TOKEN.fullmatch(scope):
                add(("auth0", "scopes", i), f"{scope[:40]!r} is not one scope token", "a scope")
    au = cfg.audit
    for key, number, low in (
        ("refusals_per_second", au.refusals_per_second, 0.0),
        ("refusal_burst", au.refusal_burst, 1),
        ("summary_interval", au.summary_interval, 0.1),
        ("keep_files", au.keep_files, 0),
        ("growth_warning_bytes_per_hour", au.growth_warning_bytes_per_hour, 0),
    ):
        if number < low:
            add(("audit", key), f"must be at least {low}", f"a number >= {low}")
    for key in ("max_connections", "max_connections_per_peer", "max_connections_per_uid"):
        value = getattr(cfg.daemon, key)
        if value is not None and value < 1:
            add(("daemon", key), "must be at least 1", "an integer >= 1")
    for key in ("handshake_timeout", "idle_timeout", "unmatched_idle_timeout"):
        if not getattr(cfg.daemon, key) > 0:
            add(("daemon", key), "must be more than 0 seconds", "a number > 0")
    for key, value in (("socket", cfg.daemon.socket), ("audit_log", cfg.daemon.audit_log)):
        if value is not None and not os.path.isabs(os.path.expanduser(value)):
            add(
                ("daemon", key),
                f'"{value}" is a relative path; it would depend on the directory aegisd '
                "starts in. Use an absolute path (~ is expanded)",
                "an absolute path",
            )
    if cfg.daemon.socket is not None:
        size = len(os.fsencode(os.path.expanduser(cfg.daemon.socket)))
        if size > max_socket_path_length():
            add(
                ("daemon", "socket"),
                f"socket path is {size} bytes, the limit is {max_socket_path_length()}; "
                "set [daemon] socket to a shorter path",
                f"a path of at most {max_socket_path_length()} bytes",
            )
    for name, action in cfg.actions.items():
        for i, scope in enumerate(action.credential.scopes):
            if not _SCOPE_TOKEN.fullmatch(scope):
                add(
                    ("actions", name, "credential", "scopes", i),
                    f"{scope[:40]!r} is not one scope token",
                    "a scope (RFC 6749 §3.3)",
                )
        for pname, pattern in action.params.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                add(
                    ("actions", name, "params", pname),
                    f"invalid regular expression ({exc})",
                    "a Python regular expression",
                )
    for i, rule in enumerate(cfg.callers):
        for digest in rule.sha256:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                add(("callers", i, "sha256"), "expected 64 lowercase hex digits", "64 hex digits")
    return found


def check_config(
    data: bytes | str, source: str = "<config>"
) -> tuple[Config | None, list[Problem]]:
    """Every structural and config-level problem of a TOML text, in one pass.

    Returns the config and ``[]`` when the text is valid. Otherwise the problems, and the
    config built from what was valid (bad values left out), or None when the text is not
    TOML at all: ``aegisctl policy check`` runs the policy checks on that partial config so
    one run reports everything.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem(file=source, message=f"not valid TOML: {exc}")]
    lines = KeyLines(text)
    cleaned, problems = walk(raw, Config, source, lines, hidden=frozenset({"source"}))
    try:
        cfg = msgspec.convert(cleaned, Config)
    except msgspec.ValidationError as exc:  # pragma: no cover - the walk models every type
        return None, [*problems, Problem(file=source, message=str(exc))]
    problems += _semantic_problems(cfg, source, lines)
    problems.sort(key=lambda p: p.line or 0)  # file order; the sort is stable within a line
    return msgspec.structs.replace(cfg, source=source), problems


def parse_config(data: bytes | str, source: str = "<config>") -> Config:
    """Decode TOML text into a ``Config``; raise ``ConfigError`` listing every problem.

    Each problem names the file, line and key (``config_check``). Semantic policy checks are
    in ``policy.compile_policy``. This is the single entry the daemon uses.
    """
    cfg, problems = check_config(data, source)
    if problems or cfg is None:
        raise ConfigError(problems=[p.render() for p in problems])
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file (``--config``, ``AEGIS_CONFIG`` or the default).

    A missing default file yields an empty config (the daemon still serves inspection
    requests and, with no callers, denies every action); a missing explicit file is an error.
    A file another account could have changed is refused with ``UnsafeFile``
    (``trusted_file``: owner, mode, symlink, the directories above it).
    """
    explicit = path is not None or "AEGIS_CONFIG" in os.environ
    p = resolve_config_path(path)
    try:
        # the policy decides what the agent may do: refuse a file others could have written
        data = read_trusted(p, what="config")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(problems=[f"{p}: file not found"]) from None
        return Config(source=str(p))
    except OSError as exc:
        raise ConfigError(problems=[f"{p}: cannot read ({exc.strerror})"]) from None
    return parse_config(data, str(p))

"""Configuration: the TOML file as msgspec Structs, its loading, and default paths.

This module owns the *shape* of ``aegisd.toml`` (every key is a Struct field here, documented
in ``docs/CONFIG.md``) and turns decoding failures into a ``ConfigError`` that names the file,
the key and what was expected. Semantic checks of the policy (templates, placeholders,
binding-message fit) live in ``policy.py``; this module must not perform I/O beyond reading the
one file it is asked to load, and must not hold global state.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Final, Literal

import msgspec
import platformdirs

from aegisd.errors import ConfigError

__all__ = [
    "ActionSpec",
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
    "default_audit_path",
    "default_config_path",
    "default_socket_path",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

APP: Final = "aegis"


def default_config_path() -> Path:
    """``platformdirs.user_config_dir("aegis")/aegisd.toml``."""
    return Path(platformdirs.user_config_dir(APP)) / "aegisd.toml"


def default_socket_path() -> Path:
    """``platformdirs.user_runtime_dir("aegis")/aegisd.sock``."""
    return Path(platformdirs.user_runtime_dir(APP)) / "aegisd.sock"


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
    handshake_timeout: float = 5.0
    idle_timeout: float = 600.0
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
    requested_expiry: int = 120
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


class CredentialSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["none", "ciba_token", "token_vault"] = "none"
    connection: str | None = None
    order: list[Literal["token_vault", "management"]] = msgspec.field(
        default_factory=lambda: ["token_vault", "management"]
    )
    login_hint: str | None = None


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


class ActionSpec(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
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


_PATH_RE: Final = re.compile(r"at `\$(?P<path>[^`]*)`")


def _key_of(msg: str) -> tuple[str, str]:
    """Split msgspec's ``"Expected `int`, got `str` - at `$.daemon.x`"`` into (key, what)."""
    m = _PATH_RE.search(msg)
    if not m:
        return "", msg
    path = m.group("path").lstrip(".")
    # $.actions['x'].params -> actions.x.params ; [0] stays as an index
    path = re.sub(r"\['([^']*)'\]", r".\1", path).lstrip(".")
    what = msg[: m.start()].rstrip(" -")
    return path, what


def _locate_action(raw: dict[str, object], key: str, what: str) -> tuple[str, str]:
    """msgspec writes dict keys as ``[...]``; find the action it meant so the key names it."""
    actions = raw.get("actions")
    if not key.startswith("actions[...]") or not isinstance(actions, dict):
        return key, what
    for name, spec in actions.items():
        try:
            msgspec.convert(spec, ActionSpec)
        except msgspec.ValidationError as exc:
            sub, sub_what = _key_of(str(exc))
            return f"actions.{name}" + (f".{sub}" if sub else ""), sub_what
    return key, what


def parse_config(data: bytes | str, source: str = "<config>") -> Config:
    """Decode TOML text into a ``Config``; raise ``ConfigError`` naming file, key and problem.

    Structural and regex problems are found here; semantic policy checks are in
    ``policy.compile_policy``.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(problems=[f"{source}: not valid TOML: {exc}"]) from None
    raw.pop("source", None)
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        key, what = _locate_action(raw, *_key_of(str(exc)))
        where = f"{source}: key {key}" if key else source
        raise ConfigError(problems=[f"{where}: {what}"]) from None
    problems: list[str] = []
    if cfg.auth0 is not None:
        if not cfg.auth0.domain and not cfg.auth0.issuer:
            problems.append(f"{source}: key auth0: set either domain or issuer")
        if not 1 <= cfg.auth0.requested_expiry <= 300:
            problems.append(
                f"{source}: key auth0.requested_expiry: must be 1..300 seconds "
                "(Guardian push allows at most 300)"
            )
    if cfg.daemon.max_connections < 1:
        problems.append(f"{source}: key daemon.max_connections: must be at least 1")
    for name, action in cfg.actions.items():
        for pname, pattern in action.params.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(
                    f"{source}: key actions.{name}.params.{pname}: invalid regular expression "
                    f"({exc})"
                )
    for i, rule in enumerate(cfg.callers):
        for digest in rule.sha256:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                problems.append(
                    f"{source}: key callers[{i}].sha256: expected 64 lowercase hex digits"
                )
    if problems:
        raise ConfigError(problems=problems)
    return msgspec.structs.replace(cfg, source=source)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file (``--config``, ``AEGIS_CONFIG`` or the default).

    A missing default file yields an empty config (the daemon still serves inspection
    requests and, with no callers, denies every action); a missing explicit file is an error.
    """
    explicit = path is not None or "AEGIS_CONFIG" in os.environ
    p = resolve_config_path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(problems=[f"{p}: file not found"]) from None
        return Config(source=str(p))
    except OSError as exc:
        raise ConfigError(problems=[f"{p}: cannot read ({exc.strerror})"]) from None
    return parse_config(data, str(p))

"""Ready-made daemon configuration for a running dev tenant: ``aegisd.toml`` and ``secrets.env``.

Owns the text of both files (DESIGN §2 "Dev tenant"): the daemon section with socket and audit
log under the state dir, the ``[auth0]`` section pointing at the loopback issuer with
``allow_insecure_http``, the management client, the Custom API Client for Token Vault, ``env``
secrets, one caller rule for this Python, and the demo policy (``demo.read``, ``demo.delete``,
``demo.token``). Every string goes through ``toml_text`` so paths with quotes or backslashes
stay valid TOML; the result must parse with ``aegisd.config.parse_config``. Writing is atomic,
``secrets.env`` is 0600. This module must not start anything or talk to the network.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aegisd.devtenant.statedir import ensure_dir, write_private
from aegisd.devtenant.toml_text import TomlValue, toml_key, toml_value
from aegisd.secrets import env_var_name

__all__ = [
    "CONFIG_FILE",
    "SECRETS_FILE",
    "TenantFacts",
    "render_aegisd_toml",
    "render_secrets_env",
    "write_state_config",
]

CONFIG_FILE: Final = "aegisd.toml"
SECRETS_FILE: Final = "secrets.env"
REPO_PATTERN: Final = "^[A-Za-z0-9._-]{1,100}$"


@dataclass(frozen=True)
class TenantFacts:
    """What the config needs to know about the running tenant."""

    issuer: str
    client_id: str
    client_secret: str
    mgmt_client_id: str
    mgmt_client_secret: str
    api_client_id: str
    api_client_secret: str
    user_id: str
    audience: str


def _section(name: list[str], items: dict[str, TomlValue]) -> list[str]:
    lines = ["[" + ".".join(toml_key(part) for part in name) + "]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in items.items()]
    return [*lines, ""]


def render_aegisd_toml(
    facts: TenantFacts, state_dir: Path, *, caller_exe: str | None = None
) -> str:
    """The daemon config that works against this tenant at once.

    Args:
        facts: the running tenant's issuer, clients and approver.
        state_dir: where the socket (``run/aegisd.sock``) and audit log go.
        caller_exe: the executable allowed to call the demo actions; default this Python,
            resolved (the daemon matches the resolved ``/proc/<pid>/exe``).
    """
    exe = caller_exe or os.path.realpath(sys.executable)
    state_dir = Path(os.path.abspath(state_dir))
    base = facts.issuer
    lines = [
        "# Written by `aegisctl dev-tenant`: a daemon config for the local dev tenant.",
        "# The dev tenant is NOT a security boundary; plain HTTP is allowed on loopback only.",
        "",
    ]
    lines += _section(
        ["daemon"],
        {
            "socket": str(state_dir / "run" / "aegisd.sock"),
            "audit_log": str(state_dir / "audit.jsonl"),
        },
    )
    lines += _section(
        ["auth0"],
        {
            "issuer": facts.issuer,
            "allow_insecure_http": True,
            "client_id": facts.client_id,
            "client_auth": "client_secret_post",
            "user_id": facts.user_id,
            "audience": facts.audience,
            "requested_expiry": 120,
        },
    )
    lines += _section(["auth0", "management"], {"client_id": facts.mgmt_client_id})
    # The documented Token Vault path: the JWT CIBA token (audience above) is exchanged by
    # the Custom API Client linked to that audience (docs/AUTH0.md).
    lines += _section(["auth0", "token_vault"], {"client_id": facts.api_client_id})
    lines += _section(["secrets"], {"backend": "env"})
    lines += [
        # aegisctl first (the first matching rule wins, and the next one names only the
        # interpreter): an operator sees and cancels every caller's pending approvals
        "[[callers]]",
        f"name = {toml_value('operator')}",
        f"exe = {toml_value([exe])}",
        f"argv = {toml_value(['*/aegisctl *'])}",
        "operator = true",
        "",
        "[[callers]]",
        f"name = {toml_value('local-python')}",
        f"exe = {toml_value([exe])}",
        f"actions = {toml_value(['demo.*'])}",
        "",
    ]
    lines += _section(
        ["actions", "demo.read"],
        {
            "description": "List the demo repositories (no approval needed)",
            "title": "List demo repositories",
            "approval": "none",
            "credential": {"kind": "none"},
            "delivery": "proxy",
            "request": {"method": "GET", "url": f"{base}demo-api/repos"},
        },
    )
    lines += _section(
        ["actions", "demo.delete"],
        {
            "description": "Delete a demo repository (approval on the phone)",
            "title": "Delete a demo repository",
            "approval": "ciba",
            "binding_message": "Delete repo {repo}",
            "params": {"repo": REPO_PATTERN},
            "credential": {"kind": "token_vault", "connection": "github"},
            "delivery": "proxy",
            "request": {"method": "DELETE", "url": f"{base}demo-api/repos/{{repo}}"},
        },
    )
    lines += _section(
        ["actions", "demo.token"],
        {
            "description": "Hand the caller a CIBA access token for the demo API audience",
            "approval": "ciba",
            "binding_message": "Issue a demo token",
            "credential": {"kind": "ciba_token"},
            "delivery": "token",
        },
    )
    return "\n".join(lines)


def render_secrets_env(facts: TenantFacts) -> str:
    """``AEGIS_SECRET_*=value`` lines for the ``env`` secret backend."""
    # Secrets are URL-safe base64, so the lines need no shell quoting.
    return (
        f"{env_var_name('auth0_client_secret')}={facts.client_secret}\n"
        f"{env_var_name('management_client_secret')}={facts.mgmt_client_secret}\n"
        f"{env_var_name('token_vault_client_secret')}={facts.api_client_secret}\n"
    )


def write_state_config(
    facts: TenantFacts, state_dir: Path, *, caller_exe: str | None = None
) -> tuple[Path, Path]:
    """Write ``aegisd.toml`` and ``secrets.env`` (0600) into ``state_dir``; return both paths."""
    ensure_dir(state_dir)
    config_path = state_dir / CONFIG_FILE
    secrets_path = state_dir / SECRETS_FILE
    text = render_aegisd_toml(facts, state_dir, caller_exe=caller_exe)
    write_private(config_path, text.encode("utf-8"), mode=0o600)
    write_private(secrets_path, render_secrets_env(facts).encode("utf-8"), mode=0o600)
    return config_path, secrets_path

"""``aegisctl auth0``: set up the Auth0 tenant for Aegis (``deploy-action``).

This module parses options, collects the secrets (secret store, or a hidden prompt for the
Action's own app), and hands them to ``aegisd.auth0.deploy``. It talks to the Auth0
Management API directly, not to aegisd. It must not print a secret value or pass one on a
command line or in an environment variable; errors travel as ``AegisError`` to ``main``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click
import httpx
import trio

from aegisctl.context import CliContext, pass_cli
from aegisd.auth0.deploy import (
    ACTION_NAME,
    ACTION_SCOPES,
    DEPLOY_SCOPES,
    ActionDeployer,
    ActionSecrets,
    DeployResult,
    ManagementTarget,
    action_code,
    default_action_domain,
    management_target,
    plan_calls,
    render_plan,
)
from aegisd.config import Config
from aegisd.errors import ConfigError, SecretsUnavailable
from aegisd.secrets import open_secret_store

__all__ = ["auth0", "deploy_action"]


@click.group()
def auth0() -> None:
    """Set up the Auth0 tenant for Aegis (talks to Auth0 directly, not to aegisd)."""


@auth0.command("deploy-action")
@click.option("--name", default=ACTION_NAME, show_default=True, help="The Action's name.")
@click.option(
    "--action-client-id",
    help=(
        "Client ID of the M2M app the Action itself uses (needs "
        f"{' '.join(ACTION_SCOPES)}). Default: the [auth0.management] app. For another "
        "app, its client secret is read from a hidden prompt, or one line of stdin when piped."
    ),
)
@click.option(
    "--action-domain",
    help=(
        "Canonical tenant domain (TENANT.REGION.auth0.com) the Action calls, also behind a "
        "custom domain. Default: [auth0] tenant_domain, or a *.auth0.com [auth0] domain."
    ),
)
@click.option(
    "--primary-user-id",
    help="The one user side identities are linked into. Default: [auth0] user_id.",
)
@click.option(
    "--link-connections",
    default="",
    help=(
        "Comma-separated connection names whose logins may be linked (e.g. email,corp-sso). "
        "Empty: the Action links nothing (fail closed)."
    ),
)
@click.option(
    "--link-mode",
    type=click.Choice(["verified_email", "reauthenticate"]),
    default="verified_email",
    show_default=True,
    help="How both accounts are proven: a verified equal email, or Auth0's redirect pattern.",
)
@click.option(
    "--link-redirect-url",
    default="",
    help="reauthenticate mode: the https page where the person signs in to the primary.",
)
@click.option(
    "--link-session-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="reauthenticate mode: a file holding the secret shared with that page (not argv).",
)
@click.option(
    "--build-timeout",
    type=click.FloatRange(min=1.0),
    default=180.0,
    show_default=True,
    help="Seconds to wait for Auth0 to build the Action.",
)
@click.option("--dry-run", is_flag=True, help="Print the calls (secrets redacted); send nothing.")
@pass_cli
def deploy_action(
    cli: CliContext,
    name: str,
    action_client_id: str | None,
    action_domain: str | None,
    primary_user_id: str | None,
    link_connections: str,
    link_mode: str,
    link_redirect_url: str,
    link_session_secret_file: Path | None,
    build_timeout: float,
    dry_run: bool,
) -> None:
    """Install or update the account-linking Post-Login Action and bind it to post-login.

    Works on the Auth0 tenant directly, not through aegisd. The [auth0.management] app
    deploys (scopes create:actions read:actions update:actions); its secret comes from the
    secret store (management_client_secret). Every secret the Action reads is set from these
    options on each deploy; an Action holding other secrets is refused (Auth0 would delete
    them). Existing post-login bindings are kept; the Action is put first. See
    docs/POST_LOGIN_ACTION.md.
    """
    cfg = cli.load_config()
    target = management_target(cfg)
    code = action_code()
    if dry_run:
        click.echo(f"dry run: nothing is sent. deploy-action would call {target.base_url}:")
        for line in render_plan(plan_calls(target, name=name, code=code)):
            click.echo(f"  {line}")
        return
    domain = action_domain or default_action_domain(cfg)
    if not domain:
        raise ConfigError(
            "the canonical tenant domain is unknown: set [auth0] tenant_domain or pass "
            "--action-domain TENANT.REGION.auth0.com"
        )
    primary = primary_user_id or (cfg.auth0.user_id if cfg.auth0 is not None else "")
    client_id = action_client_id or target.client_id
    session_secret = _read_secret_file(link_session_secret_file)
    action_secret = _read_action_secret(client_id) if client_id != target.client_id else None
    wanted = ActionSecrets(
        domain=domain,
        client_id=client_id,
        client_secret="",  # filled in by _deploy from the store or the prompt
        primary_user_id=primary,
        link_connections=tuple(c.strip() for c in link_connections.split(",") if c.strip()),
        link_mode="reauthenticate" if link_mode == "reauthenticate" else "verified_email",
        link_redirect_url=link_redirect_url,
        link_session_secret=session_secret,
    )
    result = trio.run(_deploy, cfg, target, name, code, wanted, action_secret, build_timeout)
    verb = "created" if result.created else "updated"
    bound = "bound to post-login" if result.binding_added else "already bound to post-login"
    click.echo(f"done: Action {name!r} {verb}, deployed, {bound} (id {result.action_id})")


def _read_action_secret(client_id: str) -> str:
    """A hidden prompt on a terminal, else one line of stdin: never argv or the environment."""
    if sys.stdin.isatty():
        value: str = click.prompt(
            f"Client secret of the Action's app {client_id}", hide_input=True, err=True
        )
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise SecretsUnavailable(f"no client secret given for the Action's app {client_id}")
    return value


def _read_secret_file(path: Path | None) -> str:
    """A secret from a file the person controls: never argv or the environment."""
    if path is None:
        return ""
    try:
        value = path.read_text("utf-8").strip()
    except OSError as exc:
        raise SecretsUnavailable(f"cannot read {path} ({exc.strerror})") from None
    if not value:
        raise SecretsUnavailable(f"{path} is empty")
    return value


async def _deploy(
    cfg: Config,
    target: ManagementTarget,
    name: str,
    code: str,
    wanted: ActionSecrets,
    action_secret: str | None,
    build_timeout: float,
) -> DeployResult:
    store = open_secret_store(cfg.secrets)
    mgmt_secret = await store.get("management_client_secret")
    secrets = dataclasses.replace(wanted, client_secret=action_secret or mgmt_secret)
    timeout = cfg.auth0.http_timeout if cfg.auth0 is not None else 10.0
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        deployer = ActionDeployer(http, target, report=click.echo, build_timeout=build_timeout)
        click.echo(
            f"deploying {name!r} to {target.base_url} (deployer scopes: {' '.join(DEPLOY_SCOPES)})"
        )
        return await deployer.deploy(
            name=name, code=code, secrets=secrets, client_secret=mgmt_secret
        )

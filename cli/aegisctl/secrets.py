"""``aegisctl secrets set|delete|status``: manage aegisd's own secrets in the secret store.

These commands act on the store the config names (``[secrets]``), not through the daemon; with
``--system`` (as root) on the separated-mode store: the ``file`` backend under
``/var/lib/aegis/secrets`` (or the ``dir`` that ``/etc/aegis/aegisd.toml`` names), files
owned by the daemon's account. This module reads a value from a hidden prompt (on a terminal,
with confirmation) or from stdin (when piped), hands it to the store, and reports which names
are present. It must never take a value from argv, echo it, print it, or put it into an error;
errors travel as ``AegisError`` to ``main``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import trio

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import SecretsStatusOutput, SecretState
from aegisctl.system_creds import CredentialStore
from aegisd.accounts import daemon_account, daemon_uid, system_layout
from aegisd.config import Config, SecretsConfig, load_config
from aegisd.errors import SecretsUnavailable
from aegisd.file_store import FileSecretStore
from aegisd.keyring_store import KeyringSecretStore
from aegisd.secrets import (
    MAX_SECRET_BYTES,
    SECRET_NAMES,
    EnvSecretStore,
    check_secret_value,
    env_var_name,
    needed_secrets,
    open_secret_store,
)

__all__ = ["secrets"]

T = TypeVar("T")

# A person may have to answer a desktop unlock prompt first; the daemon uses the shorter
# default so that it never waits that long.
CLI_KEYRING_TIMEOUT = 120.0


class _SecretName(click.Choice[str]):
    """``click.Choice`` that never repeats a rejected word: it may be the secret itself."""

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        self.fail(
            f"must be one of: {', '.join(map(str, self.choices))} (what you typed is not "
            "repeated here, in case it was a secret)",
            param,
            ctx,
        )


_NAME = _SecretName(SECRET_NAMES)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn)


Store = EnvSecretStore | KeyringSecretStore | FileSecretStore
SYSTEM_SET_HINT = "sudo aegisctl secrets set --system"


def _store(cfg: SecretsConfig) -> Store:
    store = open_secret_store(cfg)
    if isinstance(store, KeyringSecretStore):
        store.timeout = CLI_KEYRING_TIMEOUT
    return store


def _system(cli: CliContext) -> tuple[Config, FileSecretStore]:
    """The separated-mode config and its file store, owned by the daemon's account."""
    if os.geteuid() != 0:
        raise SecretsUnavailable(
            "--system acts on the daemon account's secret store, which only root can write: "
            "run it with sudo"
        )
    layout = system_layout()
    config_path = Path(cli.config_path) if cli.config_path else layout.config
    config = load_config(config_path)
    uid = daemon_uid()
    if uid is None:
        raise SecretsUnavailable(
            f"there is no {daemon_account()!r} account on this machine; install separated mode "
            "first: sudo aegisctl service install --system"
        )
    cfg = config.secrets
    if cfg.backend != "file":
        raise SecretsUnavailable(
            f'{config_path} selects [secrets] backend = "{cfg.backend}"; separated mode keeps '
            'its secrets in backend = "file" (aegisctl service install --system writes that)'
        )
    directory = Path(cfg.dir) if cfg.dir else layout.secrets_dir
    return config, FileSecretStore(directory, owner_uid=uid, set_hint=SYSTEM_SET_HINT)


def _credentials(*, require_systemd: bool) -> CredentialStore:
    if require_systemd:
        from aegisctl.system_install import systemd_running

        if not systemd_running():
            raise SecretsUnavailable(
                "systemd is not running here (PID 1 is not systemd): systemd credentials are "
                "decrypted by systemd when it starts aegisd.service, so an aegisd started by "
                "hand could not read them. Store the secret as a file: leave out --systemd-creds"
            )
    return CredentialStore(system_layout().config_dir / "credentials")


def _writable(cfg: SecretsConfig, name: str, verb: str) -> KeyringSecretStore | FileSecretStore:
    store = _store(cfg)
    if isinstance(store, EnvSecretStore):
        raise SecretsUnavailable(
            f'the config selects [secrets] backend = "env", which aegisctl cannot {verb}: '
            f"set {env_var_name(name)} in aegisd's environment instead (tests and dev only)"
        )
    return store


def _where(store: Store) -> str:
    if isinstance(store, KeyringSecretStore):
        return f"the keyring (service {store.service!r})"
    if isinstance(store, FileSecretStore):
        return f"{store.directory}"
    return "the environment"


system_option = click.option(
    "--system",
    is_flag=True,
    help="The separated-mode store (/var/lib/aegis/secrets, owned by the daemon's account); "
    "needs root.",
)


def _read_value(name: str) -> str:
    """The value from a hidden, confirmed prompt on a terminal, or all of piped stdin."""
    if sys.stdin.isatty():
        # click re-asks on empty input and on a mismatch; getpass reads /dev/tty unechoed.
        value: str = click.prompt(
            f"Value for {name}",
            hide_input=True,
            confirmation_prompt=True,
            err=True,
        )
        return value
    raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise click.UsageError(f"the value on stdin is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise click.UsageError("the value on stdin is not UTF-8 text") from None
    # `echo s3cret | aegisctl secrets set …` appends one newline that is not part of it.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise click.UsageError(
            f"refusing an empty value for {name} (stdin was empty); pipe the value in, or run "
            "this on a terminal to be prompted"
        )
    return text


@click.group()
def secrets() -> None:
    """Manage aegisd's own secrets (acts on the secret store, not through the daemon).

    Values are read from a hidden prompt or from stdin, never from the command line, and are
    never shown.
    """


@secrets.command(
    "set",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("name", type=_NAME)
@system_option
@click.option(
    "--systemd-creds",
    "systemd_creds",
    is_flag=True,
    help="--system: encrypt it with systemd-creds (host key or TPM) instead of a 0600 file; "
    "systemd decrypts it for aegisd.service at start.",
)
@pass_cli
@click.pass_context
def set_(ctx: click.Context, cli: CliContext, name: str, system: bool, systemd_creds: bool) -> None:
    """Store NAME, read from a hidden prompt (terminal) or from stdin (pipe).

    \b
    Examples:
      aegisctl secrets set auth0_client_secret
      aegisctl secrets set auth0_private_key < private-key.pem
      sudo aegisctl secrets set --system auth0_client_secret
      sudo aegisctl secrets set --system --systemd-creds auth0_client_secret
    """
    if ctx.args:
        # Do not echo the extra words: they are probably the secret itself.
        raise click.UsageError(
            "secret values are never taken from the command line (they would land in shell "
            "history and in the process list); type it at the prompt or pipe it on stdin"
        )
    if systemd_creds and not system:
        raise click.UsageError("--systemd-creds applies to --system only")
    creds = _credentials(require_systemd=True) if systemd_creds else None
    store: KeyringSecretStore | FileSecretStore
    if system:
        _, store = _system(cli)
    else:
        store = _writable(cli.load_config().secrets, name, "write")
    if creds is not None:
        value = _read_value(name)
        creds.set(name, value)
        # no plaintext copy left beside it (the credential would win anyway)
        _run(lambda: store.delete(name))
        click.echo(f"stored {name} encrypted in {creds.path(name)} (systemd-creds)")
        click.echo("load it: sudo systemctl daemon-reload && sudo systemctl restart aegisd")
        return
    value = _read_value(name)
    check_secret_value(name, value)
    _run(lambda: store.set(name, value))
    click.echo(f"stored {name} in {_where(store)}")
    if system:
        click.echo("a running aegisd reads it at its next use; no restart needed")


@secrets.command("delete")
@click.argument("name", type=_NAME)
@system_option
@pass_cli
def delete(cli: CliContext, name: str, system: bool) -> None:
    """Remove NAME from the store (succeeds if it was not there)."""
    store: KeyringSecretStore | FileSecretStore
    if system:
        _, store = _system(cli)
    else:
        store = _writable(cli.load_config().secrets, name, "delete from")
    if system and _credentials(require_systemd=False).delete(name):
        click.echo(f"deleted the systemd credential {name}; restart aegisd to drop it")
    if _run(lambda: store.delete(name)):
        click.echo(f"deleted {name} from {_where(store)}")
    else:
        click.echo(f"{name} was not set in {_where(store)}; nothing to delete")


@secrets.command("status")
@json_option
@system_option
@pass_cli
def status(cli: CliContext, as_json: bool, system: bool) -> None:
    """Show the backend and which secrets are present (never their values)."""
    store: Store
    if system:
        config, store = _system(cli)
    else:
        config = cli.load_config()
        store = _store(config.secrets)
    needed = needed_secrets(config)

    async def gather() -> tuple[str, dict[str, bool]]:
        if isinstance(store, KeyringSecretStore):
            detail = await store.describe()
        elif isinstance(store, FileSecretStore):
            detail = f"files in {store.directory}, owned by uid {store.owner_uid}"
        else:
            detail = "AEGIS_SECRET_* environment variables (tests and dev only)"
        return detail, {n: await store.present(n) for n in SECRET_NAMES}

    detail, present = _run(gather)
    encrypted = set(_credentials(require_systemd=False).names()) if system else set()
    present = {n: present[n] or n in encrypted for n in present}
    service = store.service if isinstance(store, KeyringSecretStore) else None
    if as_json:
        states = {
            n: SecretState(
                present=present[n], needed=n in needed, systemd_credential=n in encrypted
            )
            for n in SECRET_NAMES
        }
        emit(
            SecretsStatusOutput(
                backend=store.backend_name, detail=detail, service=service, secrets=states
            )
        )
        return
    where = f", service {service!r}" if service else ""
    click.echo(f"backend: {store.backend_name} ({detail}{where})")
    if store.backend_name == "env":
        click.echo('warning: backend "env" is for tests and the dev tenant only', err=True)
    width = max(len(n) for n in SECRET_NAMES)
    for n in SECRET_NAMES:
        state = "present" if present[n] else "missing"
        state += " (systemd credential)" if n in encrypted else ""
        note = "  (needed by the config)" if n in needed and not present[n] else ""
        click.echo(f"  {n:<{width}}  {state}{note}")

"""``aegisctl secrets set|delete|status``: manage aegisd's own secrets in the secret store.

These commands act on the store the config names (``[secrets]``), not through the daemon. This
module reads a value from a hidden prompt (on a terminal, with confirmation) or from stdin (when
piped), hands it to the store, and reports which names are present. It must never take a value
from argv, echo it, print it, or put it into an error; errors travel as ``AegisError`` to
``main``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import trio

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import SecretsStatusOutput, SecretState
from aegisd.config import SecretsConfig
from aegisd.errors import SecretsUnavailable
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


def _store(cfg: SecretsConfig) -> EnvSecretStore | KeyringSecretStore:
    store = open_secret_store(cfg)
    if isinstance(store, KeyringSecretStore):
        store.timeout = CLI_KEYRING_TIMEOUT
    return store


def _keyring_only(cfg: SecretsConfig, name: str, verb: str) -> KeyringSecretStore:
    store = _store(cfg)
    if isinstance(store, EnvSecretStore):
        raise SecretsUnavailable(
            f'the config selects [secrets] backend = "env", which aegisctl cannot {verb}: '
            f"set {env_var_name(name)} in aegisd's environment instead (tests and dev only)"
        )
    return store


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
@pass_cli
@click.pass_context
def set_(ctx: click.Context, cli: CliContext, name: str) -> None:
    """Store NAME, read from a hidden prompt (terminal) or from stdin (pipe).

    \b
    Examples:
      aegisctl secrets set auth0_client_secret
      aegisctl secrets set auth0_private_key < private-key.pem
    """
    if ctx.args:
        # Do not echo the extra words: they are probably the secret itself.
        raise click.UsageError(
            "secret values are never taken from the command line (they would land in shell "
            "history and in the process list); type it at the prompt or pipe it on stdin"
        )
    cfg = cli.load_config().secrets
    store = _keyring_only(cfg, name, "write")
    value = _read_value(name)
    check_secret_value(name, value)
    _run(lambda: store.set(name, value))
    click.echo(f"stored {name} in the keyring (service {store.service!r})")


@secrets.command("delete")
@click.argument("name", type=_NAME)
@pass_cli
def delete(cli: CliContext, name: str) -> None:
    """Remove NAME from the keyring (succeeds if it was not there)."""
    cfg = cli.load_config().secrets
    store = _keyring_only(cfg, name, "delete from")
    if _run(lambda: store.delete(name)):
        click.echo(f"deleted {name} from the keyring (service {store.service!r})")
    else:
        click.echo(f"{name} was not set (service {store.service!r}); nothing to delete")


@secrets.command("status")
@json_option
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """Show the backend and which secrets are present (never their values)."""
    config = cli.load_config()
    store = _store(config.secrets)
    needed = needed_secrets(config)

    async def gather() -> tuple[str, dict[str, bool]]:
        if isinstance(store, KeyringSecretStore):
            detail = await store.describe()
        else:
            detail = "AEGIS_SECRET_* environment variables (tests and dev only)"
        return detail, {n: await store.present(n) for n in SECRET_NAMES}

    detail, present = _run(gather)
    service = store.service if isinstance(store, KeyringSecretStore) else None
    if as_json:
        states = {n: SecretState(present=present[n], needed=n in needed) for n in SECRET_NAMES}
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
        note = "  (needed by the config)" if n in needed and not present[n] else ""
        click.echo(f"  {n:<{width}}  {state}{note}")

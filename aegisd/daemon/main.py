"""``aegisd``: run the daemon in the foreground (how systemd and launchd run it).

Owns the command line, logging set-up, signal handling (SIGTERM/SIGINT stop, SIGHUP reload)
and the exit code. Everything else is the ``Daemon``'s.
"""

from __future__ import annotations

import logging
import signal
import sys

import click
import trio

from aegisd.config import load_config
from aegisd.daemon.daemon import Daemon
from aegisd.daemon.hardening import deny_memory_access
from aegisd.errors import AegisError
from aegisd.version import DISTRIBUTION

__all__ = ["main", "run"]

log = logging.getLogger("aegisd")


async def run(daemon: Daemon) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads the policy."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve)

            async def watch() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await daemon.reload()
                    else:
                        await daemon.stop()
                        return

            nursery.start_soon(watch)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="AEGIS_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file (default: the user config dir; env AEGIS_CONFIG).",
)
@click.version_option(package_name=DISTRIBUTION, prog_name="aegisd")
def cli(config_path: str | None) -> None:
    """Run aegisd in the foreground."""
    # first of all, before any secret is read: same-uid processes lose ptrace and /proc/mem
    hardening = deny_memory_access()
    try:
        config = load_config(config_path)
        logging.basicConfig(
            level=config.daemon.log_level.upper(),
            format="aegisd[%(process)d] %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        log.debug("memory access: %s", hardening)
        if config.secrets.backend == "env":
            from aegisd.secrets import env_backend_warning

            log.warning(env_backend_warning())
        elif config.secrets.backend == "file":
            from aegisd.file_store import FileSecretStore

            # An unsafe store (foreign owner, wide mode, symlink) is a refusal to start, as
            # ssh refuses a world-readable key; a missing secret is only reported later.
            FileSecretStore.from_config(config.secrets).check()
        daemon = Daemon(config)
        try:
            trio.run(run, daemon)
        except BaseExceptionGroup as group:
            # trio wraps errors from inside the nursery (e.g. the socket checks at start-up);
            # a lone AegisError is a refusal to report plainly, not a crash
            inner = _sole_exception(group)
            if isinstance(inner, AegisError):
                raise inner from None
            raise
    except AegisError as exc:
        click.echo(f"aegisd: {exc.message}", err=True)
        for problem in getattr(exc, "problems", [])[1:]:
            click.echo(f"  {problem}", err=True)
        sys.exit(exc.exit_code)


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main() -> None:
    cli()

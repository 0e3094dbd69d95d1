"""``aegisctl service install|uninstall|status``: run aegisd under systemd (user) or launchd.

Owns the install plan: which files go where for this installation (the ``aegisd`` next to this
Python, the resolved config file, the socket), which ``systemctl --user`` or ``launchctl``
commands follow, and how ``uninstall`` reverses them. Plans are plain data (``plan_install``,
``plan_uninstall``; the steps and ``apply`` are in ``aegisctl.install_steps``) so that
``--dry-run`` prints exactly what a real run would do. File contents come from
``aegisd.service.service_files``; commands run through an injectable ``Runner`` so tests never touch
the real service manager. ``--system`` (separated mode) is planned in
``aegisctl.system_install``. This module acts outside the daemon: it never opens
the daemon's socket, and it never reads or writes a secret.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import click
import platformdirs.macos

from aegisctl import system_install
from aegisctl.context import CliContext, pass_cli
from aegisctl.install_steps import (
    MakeDir,
    RemoveFile,
    Run,
    Runner,
    RunResult,
    Step,
    WriteFile,
    apply,
    subprocess_runner,
)
from aegisctl.output import emit, json_option
from aegisctl.outputs import ServiceCommandResult, ServiceFileState, ServiceStatusOutput
from aegisd.config import APP, Config, load_config
from aegisd.errors import ConfigError
from aegisd.service.service_files import (
    LAUNCHD_LABEL,
    LAUNCHD_PLIST,
    SYSTEMD_SERVICE,
    SYSTEMD_SOCKET,
    render_launchd_plist,
    render_systemd_service,
    render_systemd_socket,
)

__all__ = [
    "Installation",
    "MakeDir",
    "RemoveFile",
    "Run",
    "RunResult",
    "Runner",
    "Step",
    "WriteFile",
    "detect_installation",
    "installed_files",
    "make_service_group",
    "plan_install",
    "plan_uninstall",
    "service",
    "status_commands",
    "subprocess_runner",
]

Platform = Literal["linux", "macos"]
PLATFORMS: Final[tuple[Platform, ...]] = ("linux", "macos")
COMMAND_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class Installation:
    """Everything the plans depend on, resolved once (tests build one directly)."""

    platform: Platform
    home: Path
    uid: int
    user: str
    aegisd: Path
    config: Path
    socket: Path | None  # None: the platform default (systemd: %t/aegis/aegisd.sock)
    xdg_config_home: Path | None = None

    @property
    def unit_dir(self) -> Path:
        return (self.xdg_config_home or self.home / ".config") / "systemd" / "user"

    @property
    def agents_dir(self) -> Path:
        return self.home / "Library" / "LaunchAgents"

    @property
    def log_file(self) -> Path:
        return self.home / "Library" / "Logs" / APP / "aegisd.log"

    @property
    def launchd_socket(self) -> Path:
        if self.socket is not None:
            return self.socket
        # platformdirs' macOS user_runtime_dir (what aegisd uses by default there), spelled
        # out from this home so that a dry run on Linux shows the macOS path too.
        return self.home / "Library" / "Caches" / "TemporaryItems" / APP / "aegisd.sock"

    @property
    def launchd_target(self) -> str:
        return f"gui/{self.uid}"


def host_platform() -> Platform | None:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("linux"):
        return "linux"
    return None


def detect_installation(
    cli: CliContext, platform: Platform, aegisd: str | None = None
) -> tuple[Installation, Config]:
    """Resolve the paths for this installation and check the config the service will use.

    Raises:
        ConfigError: no ``aegisd`` executable, or the config file is missing or invalid (the
            service passes ``--config`` explicitly, so it would refuse to start).
    """
    exe = Path(aegisd) if aegisd else Path(sys.executable).parent / "aegisd"
    # Keep the venv's own path: resolving the symlinked python would leave the venv.
    exe = Path(os.path.abspath(exe.expanduser()))
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise ConfigError(
            f"{exe}: no aegisd executable there; install aegis into this environment, or pass "
            "--aegisd PATH"
        )
    config_path = cli.config_file()
    if cli.config_path is None and "AEGIS_CONFIG" not in os.environ and platform == "macos":
        config_path = Path(platformdirs.macos.MacOS(APP).user_config_dir) / "aegisd.toml"
    config_path = Path(os.path.abspath(config_path))
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path}: config file not found; write it first (docs/CONFIG.md). The "
            "service runs aegisd with --config set to this path."
        )
    config = load_config(config_path)
    socket = Path(os.path.abspath(config.socket_path())) if config.daemon.socket else None
    xdg = os.environ.get("XDG_CONFIG_HOME")
    inst = Installation(
        platform=platform,
        home=Path.home(),
        uid=os.getuid(),
        user=getpass.getuser(),
        aegisd=exe,
        config=config_path,
        socket=socket,
        xdg_config_home=Path(xdg) if xdg and platform == "linux" else None,
    )
    return inst, config


def installed_files(inst: Installation) -> dict[Path, bytes]:
    """The files ``install`` writes, with the content it would write now."""
    if inst.platform == "linux":
        socket = str(inst.socket) if inst.socket else None
        return {
            inst.unit_dir / SYSTEMD_SERVICE: render_systemd_service(
                str(inst.aegisd), str(inst.config)
            ).encode(),
            inst.unit_dir / SYSTEMD_SOCKET: render_systemd_socket(socket).encode(),
        }
    plist = render_launchd_plist(
        str(inst.aegisd), str(inst.config), str(inst.launchd_socket), str(inst.log_file)
    )
    return {inst.agents_dir / LAUNCHD_PLIST: plist}


def _systemctl(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


def plan_install(inst: Installation, *, start: bool = True) -> list[Step]:
    files = installed_files(inst)
    if inst.platform == "linux":
        steps: list[Step] = [
            MakeDir(inst.unit_dir, 0o755),
            *(WriteFile(path, content) for path, content in files.items()),
            Run(_systemctl("daemon-reload")),
        ]
        if start:
            steps += [
                Run(_systemctl("enable", "--now", SYSTEMD_SOCKET)),
                # A daemon already running keeps its old ExecStart until restarted.
                Run(_systemctl("try-restart", SYSTEMD_SERVICE)),
            ]
        return steps
    service = f"{inst.launchd_target}/{LAUNCHD_LABEL}"
    [(plist_path, plist)] = files.items()
    return [
        MakeDir(inst.agents_dir, 0o755),
        MakeDir(inst.log_file.parent, 0o700),
        # aegisd checks that its socket directory is private; launchd only creates the socket.
        MakeDir(inst.launchd_socket.parent, 0o700),
        # bootstrap refuses a label that is already loaded: unload an older copy first.
        Run(("launchctl", "bootout", service), check=False),
        WriteFile(plist_path, plist),
        *(
            [
                Run(("launchctl", "enable", service)),
                Run(("launchctl", "bootstrap", inst.launchd_target, str(plist_path))),
            ]
            if start
            else []
        ),
    ]


def plan_uninstall(inst: Installation) -> list[Step]:
    files = list(installed_files(inst))
    if inst.platform == "linux":
        return [
            Run(_systemctl("disable", "--now", SYSTEMD_SOCKET, SYSTEMD_SERVICE), check=False),
            *(RemoveFile(path) for path in files),
            Run(_systemctl("daemon-reload")),
        ]
    return [
        Run(("launchctl", "bootout", f"{inst.launchd_target}/{LAUNCHD_LABEL}"), check=False),
        *(RemoveFile(path) for path in files),
    ]


def status_commands(inst: Installation) -> list[tuple[str, ...]]:
    if inst.platform == "linux":
        return [
            _systemctl("--no-pager", "--lines=0", "status", SYSTEMD_SOCKET, SYSTEMD_SERVICE),
            ("loginctl", "show-user", inst.user, "--property=Linger"),
        ]
    return [("launchctl", "print", f"{inst.launchd_target}/{LAUNCHD_LABEL}")]


def _linger_note(inst: Installation) -> str:
    return (
        "aegisd starts on the first connection to its socket and stops with your session.\n"
        "On a headless box, keep your user manager running without a login:\n"
        f"    loginctl enable-linger {shlex.quote(inst.user)}\n"
        "Without a login nothing unlocks the login keyring: see docs/OPERATIONS.md, "
        '"Keyring on a headless machine".'
    )


def _macos_note(inst: Installation) -> str:
    return (
        f"aegisd runs in your GUI session ({inst.launchd_target}) and logs to {inst.log_file}.\n"
        "On a headless Mac, turn on automatic login so the session (and the login Keychain)\n"
        "exists after a reboot."
    )


def make_service_group(runner: Runner = subprocess_runner) -> click.Group:
    """The ``service`` command group, running commands through ``runner``."""

    platform_option = click.option(
        "--platform",
        type=click.Choice(PLATFORMS),
        default=None,
        help="Service manager to target (default: this machine's). Another one needs --dry-run.",
    )
    aegisd_option = click.option(
        "--aegisd",
        "aegisd",
        type=click.Path(dir_okay=False),
        default=None,
        help="The aegisd executable the service runs (default: the one next to this Python).",
    )
    dry_run_option = click.option(
        "--dry-run", is_flag=True, help="Print every file and command; change nothing."
    )

    def choose(platform: Platform | None, dry_run: bool) -> Platform:
        host = host_platform()
        chosen = platform or host
        if chosen is None:
            raise click.UsageError(
                f"no service manager support for {sys.platform}; try --platform with --dry-run"
            )
        if chosen != host and not dry_run:
            raise click.UsageError(f"--platform {chosen} on this machine needs --dry-run")
        return chosen

    @click.group()
    def service() -> None:
        """Install aegisd as a service: per-user, or as its own account with --system.

        --system (separated mode, recommended) runs the daemon as the 'aegis' account, so the
        person's own processes (the agent included) cannot read its secrets or change its
        policy. Acts on the service manager, not through the daemon.
        """

    @service.command()
    @click.option(
        "--system",
        is_flag=True,
        help="Separated mode: a system service under its own account (needs root).",
    )
    @click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        default=None,
        help="The config to install (--system: copied to /etc/aegis/aegisd.toml with the "
        "system paths; default: the existing system config).",
    )
    @click.option(
        "--person",
        metavar="USER",
        default=None,
        help="--system: the account the agent runs as, allowed to connect (default $SUDO_USER).",
    )
    @click.option(
        "--verify-exe",
        is_flag=True,
        help="--system: grant CAP_SYS_PTRACE so exe/sha256 caller rules work across uids.",
    )
    @click.option("--no-start", is_flag=True, help="Write everything but start nothing.")
    @platform_option
    @aegisd_option
    @dry_run_option
    @pass_cli
    def install(
        cli: CliContext,
        system: bool,
        config: str | None,
        person: str | None,
        verify_exe: bool,
        no_start: bool,
        platform: Platform | None,
        aegisd: str | None,
        dry_run: bool,
    ) -> None:
        """Write the unit files (or plist) for this installation and start the socket.

        With --system (separated mode, as root): the 'aegis' account, /etc/aegis,
        /var/lib/aegis, /run/aegis and the system units; see docs/OPERATIONS.md.
        """
        chosen = choose(platform, dry_run)
        if system:
            exe = Path(aegisd) if aegisd else Path(sys.executable).parent / "aegisd"
            system_install.install(
                runner,
                chosen,
                aegisd=Path(os.path.abspath(exe)),
                config=config,
                person=person,
                verify_exe=verify_exe,
                start=not no_start,
                dry_run=dry_run,
            )
            return
        if person or verify_exe:
            raise click.UsageError("--person and --verify-exe apply to --system only")
        if config:
            cli = CliContext(socket_path=cli.socket_path, config_path=config)
        inst, _ = detect_installation(cli, chosen, aegisd)
        if inst.platform == "linux":
            _require_user_manager(inst, runner, dry_run=dry_run)
        apply(plan_install(inst, start=not no_start), runner, dry_run=dry_run)
        click.echo("")
        click.echo(_linger_note(inst) if inst.platform == "linux" else _macos_note(inst))

    @service.command()
    @click.option("--system", is_flag=True, help="Remove separated mode (needs root).")
    @click.option(
        "--purge",
        is_flag=True,
        help="--system: also delete the state (audit log, active policy) and the accounts.",
    )
    @platform_option
    @aegisd_option
    @dry_run_option
    @pass_cli
    def uninstall(
        cli: CliContext,
        system: bool,
        purge: bool,
        platform: Platform | None,
        aegisd: str | None,
        dry_run: bool,
    ) -> None:
        """Stop aegisd, disable it and remove the files that install wrote."""
        chosen = choose(platform, dry_run)
        if system:
            system_install.uninstall(runner, chosen, purge=purge, dry_run=dry_run)
            return
        if purge:
            raise click.UsageError("--purge applies to --system only")
        inst = _installation_for_removal(cli, chosen, aegisd)
        apply(plan_uninstall(inst), runner, dry_run=dry_run)

    @service.command()
    @click.option("--system", is_flag=True, help="Separated mode's files and service.")
    @platform_option
    @aegisd_option
    @dry_run_option
    @json_option
    @pass_cli
    def status(
        cli: CliContext,
        system: bool,
        platform: Platform | None,
        aegisd: str | None,
        dry_run: bool,
        as_json: bool,
    ) -> None:
        """Show whether the files are installed and current, and the manager's view.

        Exits 0 when installed and running, 1 when not installed, 3 when installed but the
        service manager says it is not running (or cannot be asked).
        """
        chosen = choose(platform, dry_run)
        if system:
            sys.exit(system_install.status(runner, chosen, dry_run=dry_run))
        inst = _installation_for_removal(cli, chosen, aegisd)
        if as_json:
            doc = _status_output(inst, runner, dry_run=dry_run)
            emit(doc)
            if not dry_run and not doc.ok:
                sys.exit(1 if any(f.state == "not installed" for f in doc.files) else 3)
            return
        missing = False
        for path, content in installed_files(inst).items():
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                state = "not installed"
                missing = True
            else:
                differs = ", but differs from what `aegisctl service install` writes now"
                state = "installed" + ("" if current == content else differs)
            click.echo(f"{path}: {state}")
        running = True
        for argv in status_commands(inst):
            if dry_run:
                click.echo(f"would run: {shlex.join(argv)}")
                continue
            result = runner(argv)
            click.echo(f"$ {shlex.join(argv)}  (exit {result.returncode})")
            text = (result.stdout + result.stderr).rstrip()
            if text:
                click.echo(text)
            if argv[0] != "loginctl" and result.returncode != 0:
                running = False
        if dry_run:
            return
        if missing:
            sys.exit(1)
        if not running:
            sys.exit(3)

    return service


def _require_user_manager(inst: Installation, runner: Runner, *, dry_run: bool) -> None:
    """Refuse before writing anything when no systemd user manager runs for this user."""
    argv = _systemctl("show-environment")
    if dry_run:
        click.echo(f"(a real run first checks that a user manager runs: {shlex.join(argv)})")
        return
    result = runner(argv)
    if result.returncode == 0:
        return
    user = shlex.quote(inst.user)
    raise click.ClickException(
        f"no systemd user manager is running for {inst.user} (`{shlex.join(argv)}` failed: "
        f"{(result.stderr or result.stdout).strip() or 'exit ' + str(result.returncode)}); "
        "nothing was written. Do one of:\n"
        f"  - log in as {inst.user} (a desktop or ssh session starts one) and run this there;\n"
        f"  - keep one running without a login: sudo loginctl enable-linger {user}, then run "
        "this again;\n"
        "  - install separated mode instead (recommended; no user manager needed):\n"
        f"      sudo {shlex.quote(str(inst.aegisd.parent / 'aegisctl'))} service install "
        f"--system --config {shlex.quote(str(inst.config))}"
    )


def _installation_for_removal(
    cli: CliContext, platform: Platform, aegisd: str | None
) -> Installation:
    """Like ``detect_installation``, but a missing or broken config must not block removal."""
    try:
        inst, _ = detect_installation(cli, platform, aegisd)
    except ConfigError:
        # Only the file *locations* matter for uninstall and status, and they do not depend on
        # the config unless it moved the socket (which only changes file contents).
        xdg = os.environ.get("XDG_CONFIG_HOME")
        inst = Installation(
            platform=platform,
            home=Path.home(),
            uid=os.getuid(),
            user=getpass.getuser(),
            aegisd=Path(os.path.abspath(aegisd or Path(sys.executable).parent / "aegisd")),
            config=Path(os.path.abspath(cli.config_file())),
            socket=None,
            xdg_config_home=Path(xdg) if xdg and platform == "linux" else None,
        )
    return inst


service = make_service_group()


def _status_output(inst: Installation, runner: Runner, *, dry_run: bool) -> ServiceStatusOutput:
    """``service status --json``: each file's state and each manager command's answer."""
    files: list[ServiceFileState] = []
    for path, content in installed_files(inst).items():
        state: Literal["installed", "not installed", "differs"]
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            state = "not installed"
        else:
            state = "installed" if current == content else "differs"
        files.append(ServiceFileState(path=str(path), state=state))
    commands: list[ServiceCommandResult] = []
    for argv in status_commands(inst):
        if dry_run:
            commands.append(ServiceCommandResult(argv=list(argv)))
            continue
        result = runner(argv)
        output = (result.stdout + result.stderr).rstrip()
        commands.append(
            ServiceCommandResult(argv=list(argv), exit_code=result.returncode, output=output)
        )
    installed = all(f.state != "not installed" for f in files)
    # the linger query says nothing about whether aegisd runs
    running = all(c.exit_code in (0, None) for c in commands if c.argv[0] != "loginctl")
    return ServiceStatusOutput(ok=installed and running, files=files, commands=commands)

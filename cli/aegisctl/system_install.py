"""``aegisctl service install|uninstall|status --system``: separated mode on this machine.

Owns reading the facts a plan needs (accounts and groups present, systemd running, the
config to install), the refusal to install an interpreter or package that the daemon's
account could not run (with the commands for a system-wide installation), and the three
commands, which carry out ``aegisctl.system_plan``'s plans through ``install_steps.apply``.
Never reads or writes a secret (that is ``aegisctl secrets set --system``).
"""

from __future__ import annotations

import grp
import importlib.metadata
import os
import pwd
import shlex
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from aegisctl.install_steps import Runner, apply
from aegisctl.system_plan import (
    LAUNCH_DAEMONS,
    SYSTEM_UNIT_DIR,
    Platform,
    SystemInstallation,
    plan_system_install,
    plan_system_uninstall,
    render_system_config,
    start_note,
)
from aegisd.accounts import CLIENTS_GROUP, system_layout
from aegisd.errors import ConfigError
from aegisd.service.system_service_files import LAUNCHD_DAEMON_LABEL, LAUNCHD_DAEMON_PLIST

__all__ = [
    "check_can_run",
    "install",
    "installation_problems",
    "read_machine",
    "refusal_message",
    "running_installation",
    "status",
    "systemd_running",
    "uninstall",
]


def systemd_running() -> bool:
    """systemd is PID 1 (``sd_booted``'s test); not in most containers or CI machines."""
    return os.path.isdir("/run/systemd/system")


# ---- can the account run this installation? ------------------------------------------------


def _other_access(path: Path, need: int) -> str | None:
    """Why "others" (a fresh account in no group of the owner) lack ``need`` on ``path``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat ({exc.strerror})"
    missing = need & ~st.st_mode & 0o007
    if not missing:
        return None
    run = "enter" if stat.S_ISDIR(st.st_mode) else "execute"
    perms = " or ".join(word for bit, word in ((4, "read"), (1, run)) if missing & bit)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}: others cannot {perms} it"


def installation_problems(paths: Sequence[tuple[Path, bool]]) -> list[str]:
    """What keeps the daemon's account from running these files: ``(path, is_executable)``.

    Each path and its resolved target are checked along with every directory above them
    (``x`` for directories, ``r`` for files, ``r+x`` for executables and package
    directories). ACLs are not considered: a path they open is reported anyway.
    """
    problems: list[str] = []
    seen: set[Path] = set()
    for path, executable in paths:
        for candidate in dict.fromkeys((Path(os.path.abspath(path)), Path(os.path.realpath(path)))):
            for parent in reversed(candidate.parents):
                if parent in seen:
                    continue
                seen.add(parent)
                why = _other_access(parent, 0o1)
                if why:
                    problems.append(f"{parent}: {why}")
            if candidate in seen:
                continue
            seen.add(candidate)
            need = 0o5 if executable or candidate.is_dir() else 0o4
            why = _other_access(candidate, need)
            if why:
                problems.append(f"{candidate}: {why}")
    return problems


def running_installation(aegisd: Path) -> list[tuple[Path, bool]]:
    """The files the daemon needs from this installation: interpreter, script, packages."""
    import trio

    import aegisd as package

    return [
        (Path(sys.executable), True),
        (aegisd, True),
        (Path(package.__file__).parent, True),
        (Path(trio.__file__).parent, True),  # the site-packages the dependencies live in
        (Path(os.__file__).parent, True),  # the standard library
    ]


def _project_spec() -> str:
    """What ``pip install`` needs to reinstall this project: its source tree or its name."""
    import aegisd as package

    root = Path(package.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return str(root)
    try:
        return importlib.metadata.packages_distributions()["aegisd"][0]
    except (KeyError, IndexError):
        return "aegis"


def refusal_message(problems: Sequence[str], account: str, rerun: Sequence[str]) -> str:
    spec = _project_spec()
    lines = [
        f"refusing to install separated mode: the {account!r} account could not run this "
        "installation of aegis (nothing was changed):",
        *(f"  {p}" for p in problems),
        "",
        "Make a system-wide installation it can run, then rerun from there:",
        "  sudo apt-get install python3-venv     # Debian/Ubuntu, if `python3 -m venv` fails",
        "  sudo /usr/bin/python3 -m venv /opt/aegis",
        f"  sudo /opt/aegis/bin/pip install {shlex.quote(spec)}",
        "  sudo /opt/aegis/bin/aegisctl " + shlex.join(rerun),
    ]
    return "\n".join(lines)


# ---- facts read from this machine --------------------------------------------------------


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _in_group(user: str, group: str) -> bool:
    try:
        g = grp.getgrnam(group)
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    return user in g.gr_mem or pw.pw_gid == g.gr_gid


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def read_machine(
    platform: Platform,
    *,
    aegisd: Path,
    config: str | None,
    person: str | None,
    verify_exe: bool,
    start: bool,
) -> SystemInstallation:
    """Resolve every fact the plan needs; ``ConfigError`` for a missing person or config."""
    layout = system_layout(platform)
    person = person or os.environ.get("SUDO_USER")
    if not person:
        raise ConfigError(
            "which person may use the daemon? pass --person USER (the account your agent runs "
            "as; default: $SUDO_USER, which is unset)"
        )
    try:
        person_uid = pwd.getpwnam(person).pw_uid
    except KeyError:
        raise ConfigError(f"--person {person}: no such user on this machine") from None
    if person_uid == 0:
        raise ConfigError(
            "--person must be the non-root account the agent runs as, not root (run with sudo "
            "from that account, or pass --person USER)"
        )
    if person == layout.account:
        raise ConfigError(f"--person cannot be the daemon's own account {layout.account!r}")
    source = Path(config) if config else layout.config
    try:
        text = source.read_bytes()
    except FileNotFoundError:
        hint = "" if config else " (no --config given and no system config yet)"
        raise ConfigError(f"{source}: config file not found{hint}; pass --config FILE") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
    return SystemInstallation(
        platform=platform,
        layout=layout,
        aegisd=aegisd,
        person=person,
        config_text=render_system_config(text, str(source), layout, person_uid),
        verify_exe=verify_exe,
        service_manager=True if platform == "macos" else systemd_running(),
        start=start,
        have_clients_group=_group_exists(CLIENTS_GROUP),
        have_account_group=_group_exists(layout.account),
        have_account=_account_exists(layout.account),
        account_in_group=_in_group(layout.account, CLIENTS_GROUP),
        person_in_group=_in_group(person, CLIENTS_GROUP),
    )


def check_can_run(inst: SystemInstallation, rerun: Sequence[str]) -> None:
    """Refuse (``click.ClickException``) an installation the account could not execute."""
    problems = installation_problems(running_installation(inst.aegisd))
    if problems:
        raise click.ClickException(refusal_message(problems, inst.account, rerun))


# ---- the commands ----------------------------------------------------------------------


def _require_root(dry_run: bool) -> None:
    if not dry_run and os.geteuid() != 0:
        raise click.ClickException(
            "--system creates an account and writes under /etc and /var/lib: run it with sudo "
            "(or add --dry-run to see every step)"
        )


def install(
    runner: Runner,
    platform: Platform,
    *,
    aegisd: Path,
    config: str | None,
    person: str | None,
    verify_exe: bool,
    start: bool,
    dry_run: bool,
) -> None:
    """``service install --system``: check everything first, then carry out the plan."""
    _require_root(dry_run)
    if not (aegisd.is_file() and os.access(aegisd, os.X_OK)):
        raise ConfigError(f"{aegisd}: no aegisd executable there; pass --aegisd PATH")
    inst = read_machine(
        platform, aegisd=aegisd, config=config, person=person, verify_exe=verify_exe, start=start
    )
    rerun = ["service", "install", "--system", "--person", inst.person]
    rerun += ["--config", os.path.abspath(config)] if config else []
    rerun += ["--verify-exe"] if verify_exe else []
    rerun += ["--no-start"] if not start else []
    try:
        check_can_run(inst, rerun)
    except click.ClickException as exc:
        if not dry_run:
            raise
        # A dry run still shows the plan (e.g. from a development checkout); the refusal first.
        click.echo(f"warning: a real run would stop here:\n{exc.message}\n", err=True)
    apply(plan_system_install(inst), runner, dry_run=dry_run)
    click.echo("")
    click.echo(start_note(inst))


def uninstall(runner: Runner, platform: Platform, *, purge: bool, dry_run: bool) -> None:
    _require_root(dry_run)
    layout = system_layout(platform)
    manager = True if platform == "macos" else systemd_running()
    if not manager and not dry_run and _account_exists(layout.account):
        # Started by hand: nothing stops it for us, and userdel refuses a busy account.
        running = runner(("pgrep", "-u", layout.account))
        if running.returncode == 0:
            pids = " ".join(running.stdout.split())
            raise click.ClickException(
                f"aegisd is still running as {layout.account} (pid {pids}); stop it first "
                f"(sudo kill {pids}), then run this again. Nothing was changed."
            )
    steps = plan_system_uninstall(
        platform,
        layout,
        service_manager=manager,
        purge=purge,
        have_account=_account_exists(layout.account),
        have_clients_group=_group_exists(CLIENTS_GROUP),
    )
    apply(steps, runner, dry_run=dry_run)
    if not purge:
        click.echo(
            f"kept {layout.state_dir} (audit log) and the {layout.account!r} account that owns "
            "it; `uninstall --system --purge` removes both"
        )


def status(runner: Runner, platform: Platform, *, dry_run: bool) -> int:
    """Print the separated-mode files and the service's state; the exit code (0, 1 or 3)."""
    layout = system_layout(platform)
    paths = [layout.config, layout.state_dir, layout.runtime_dir]
    if platform == "macos":
        paths.append(LAUNCH_DAEMONS / LAUNCHD_DAEMON_PLIST)
    else:
        paths += [SYSTEM_UNIT_DIR / "aegisd.service", SYSTEM_UNIT_DIR / "aegisd.socket"]
    missing = False
    account = "present" if _account_exists(layout.account) else "missing"
    missing |= account == "missing"
    click.echo(f"account {layout.account}: {account}")
    for path in paths:
        present = os.path.lexists(path)
        missing |= not present
        click.echo(f"{path}: {'present' if present else 'missing'}")
    if platform == "macos":
        argv: tuple[str, ...] = ("launchctl", "print", f"system/{LAUNCHD_DAEMON_LABEL}")
    elif systemd_running():
        argv = ("systemctl", "--no-pager", "--lines=0", "status", "aegisd.socket", "aegisd.service")
    else:
        click.echo(
            "systemd is not running here: check the daemon with `aegisctl status` "
            f"(socket {layout.socket})"
        )
        return 1 if missing else (0 if os.path.exists(layout.socket) else 3)
    if dry_run:
        click.echo(f"would run: {shlex.join(argv)}")
        return 0
    result = runner(argv)
    click.echo(f"$ {shlex.join(argv)}  (exit {result.returncode})")
    text = (result.stdout + result.stderr).rstrip()
    if text:
        click.echo(text)
    if missing:
        return 1
    return 0 if result.returncode == 0 else 3

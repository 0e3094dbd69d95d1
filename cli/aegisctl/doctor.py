"""``aegisctl doctor``: check an installation end to end and say how to fix what is wrong.

Owns the list of checks and their verdicts (ok / warn / fail, each with a fix). It reads the
config file, the socket and directory modes, the daemon's lock, the audit log and the service
manager's view; the secret store (presence only, never values: ``doctor_secrets``) and Auth0
discovery with the clock's skew (``doctor_auth0``) have modules of their own. It never
changes anything.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import click
import trio

from aegisctl.context import CliContext, pass_cli
from aegisctl.doctor_auth0 import auth0_checks
from aegisctl.doctor_check import Check
from aegisctl.doctor_secrets import secrets_checks
from aegisctl.executables import exe_pattern_warnings, resolved_executables
from aegisctl.output import colour_enabled, emit, json_option, verdict
from aegisctl.outputs import CheckOutput, DoctorOutput
from aegisd.accounts import daemon_uid
from aegisd.client import AegisClient
from aegisd.config import Config, load_config
from aegisd.daemon import instance_lock
from aegisd.daemon.audit import verify_files
from aegisd.daemon.audit_anchor import read_anchor
from aegisd.errors import AegisError, ConfigError, UnsafeFile
from aegisd.policy import compile_policy
from aegisd.runtime_dir import fallback_reason
from aegisd.wire import StatusReport


async def _check_all(cli: CliContext, timeout: float) -> list[Check]:
    checks: list[Check] = []
    path = cli.config_file()
    cfg: Config | None = None
    try:
        cfg = load_config(cli.config_path)
        compile_policy(cfg)
        exists = path.exists()
        checks.append(
            Check(
                "config",
                "ok" if exists else "warn",
                f"{path} is valid" if exists else f"{path} does not exist; using defaults",
                "" if exists else "write a config (see docs/CONFIG.md) or run the dev tenant",
            )
        )
    except UnsafeFile as exc:  # what aegisd refuses at start: say so with the command
        checks.append(Check("config", "fail", exc.reason, exc.fix))
    except ConfigError as exc:
        checks.append(
            Check("config", "fail", "; ".join(exc.problems[:5]), "fix the keys named above")
        )
    if cfg is not None and not cfg.callers:
        checks.append(
            Check(
                "callers",
                "warn",
                "no [[callers]] rules: no process may request any action (default deny)",
                "add a [[callers]] rule naming the MCP shim or your program",
            )
        )
    if cfg is not None:
        checks.extend(_caller_exe_checks(cfg))
    runtime = _runtime_dir_check()
    if runtime is not None:
        checks.append(runtime)
    socket = cli.socket()
    checks.append(_socket_dir_check(socket))
    daemon_check, report = await _daemon_check(socket, timeout)
    if report is None:  # a daemon may run without its socket
        daemon_check = _lock_check(
            socket, (cfg or cli.partial_config() or Config()).audit_path(), daemon_check
        )
    checks.append(daemon_check)
    checks.append(_mode_check(report))
    if cfg is not None:
        checks.append(_audit_check(cfg, report))
        checks.extend(await secrets_checks(cfg))
        if cfg.auth0 is not None:
            checks.extend(await auth0_checks(cfg, timeout))
        else:
            checks.append(
                Check(
                    "auth0",
                    "warn",
                    "no [auth0] section: actions that need approval cannot run",
                    "see docs/AUTH0.md to set up a tenant, or `aegisctl dev-tenant` to try",
                )
            )
    checks.append(_service_check())
    return checks


def _separated_layout(st: os.stat_result) -> bool:
    """Owned by the daemon account, and nobody else may write (0750/0710 group layout)."""
    account = daemon_uid()
    return account is not None and st.st_uid == account and not st.st_mode & 0o022


def _socket_dir_check(socket: Path) -> Check:
    directory = socket.parent
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return Check(
            "socket-dir", "warn", f"{directory} does not exist yet", "aegisd creates it at start"
        )
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISLNK(st.st_mode) and _separated_layout(st):
        return Check("socket-dir", "ok", f"{directory} belongs to aegisd's account (mode {mode:o})")
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or mode & 0o077:
        return Check(
            "socket-dir",
            "fail",
            f"{directory}: owner uid {st.st_uid}, mode {mode:o} (must be yours and 700)",
            f"chmod 700 {directory} (or remove it and let aegisd recreate it)",
        )
    return Check("socket-dir", "ok", f"{directory} is private (700)")


async def _daemon_check(socket: Path, timeout: float) -> tuple[Check, StatusReport | None]:
    try:
        st = os.lstat(socket)
        mode = stat.S_IMODE(st.st_mode)
        # 0660 for the clients' group when the daemon account owns it (separated mode)
        allowed = 0o117 if st.st_uid == daemon_uid() else 0o177
        if mode & allowed:
            return Check(
                "socket",
                "fail",
                f"{socket} has mode {mode:o}",
                "must be 600 (660 in separated mode): for systemd set SocketMode=",
            ), None
    except FileNotFoundError:
        return Check(
            "daemon",
            "fail",
            f"nothing at {socket}: aegisd is not running",
            "start it with `aegisd` or `aegisctl service install`",
        ), None
    except PermissionError:  # e.g. /run/aegis before the person's new group is in effect
        return Check(
            "daemon",
            "fail",
            f"{socket}: its directory cannot be entered from this account",
            "separated mode: log out and in after `install --system` (group aegis-clients)",
        ), None
    try:
        with trio.fail_after(timeout):
            async with AegisClient(socket, client_name="aegisctl-doctor") as c:
                report = await c.status()
    except (AegisError, trio.TooSlowError) as exc:
        msg = exc.message if isinstance(exc, AegisError) else "timed out"
        return Check(
            "daemon", "fail", f"{socket}: {msg}", "start it with `aegisd` or check its log"
        ), None
    return Check(
        "daemon", "ok", f"aegisd {report.daemon_version} (pid {report.pid}) answers on {socket}"
    ), report


def _lock_check(socket: Path, audit: Path, missing: Check) -> Check:
    """Nothing at the socket: does a daemon still hold the audit log's lock (issue 13.10)?"""
    found = instance_lock.without_socket(socket, audit)
    if found is None:
        return missing  # something is there (or cannot be seen): the daemon check said what
    if found.state == "held":
        pid = found.pid if found.pid is not None else "?"
        if found.socket and found.socket != str(socket) and os.path.lexists(found.socket):
            return Check(
                "daemon",
                "fail",
                f"nothing at {socket}, but aegisd (pid {pid}) runs on {audit} with the socket "
                f"{found.socket}",
                f"aegisctl --socket {found.socket} ..., or set [daemon] socket in the config",
            )
        return Check(
            "daemon",
            "fail",
            instance_lock.socket_gone(found.pid, socket),
            f"restart it: `kill -TERM {pid}`, then start aegisd again (a service: "
            "`systemctl --user restart aegisd.socket aegisd`)",
        )
    if found.state == "unknown":
        return Check(
            missing.name,
            missing.verdict,
            f"{missing.detail} (whether an aegisd still runs on {audit} cannot be seen from "
            f"this account: {found.detail})",
            f"{missing.fix}; or `sudo aegisctl doctor` to check the lock",
        )
    return missing


def _mode_check(report: StatusReport | None) -> Check:
    """Separated or same-uid mode, and what the latter leaves open (issue 12.9)."""
    if report is None:
        return Check("mode", "warn", "unknown: the daemon did not answer", "start aegisd first")
    who = f"{report.daemon_user or '?'} (uid {report.daemon_uid})"
    if report.mode == "separated":
        return Check(
            "mode",
            "ok",
            f"separated: aegisd runs as {who}; your processes cannot read its secrets, "
            "change its policy (except by `aegisctl policy propose`, approved on the phone), "
            "signal it or rewrite its audit",
        )
    if report.mode == "same-uid":
        return Check(
            "mode",
            "warn",
            f"same-uid: aegisd runs as {who}, so any process of that account, the agent "
            "included, can read the daemon's secrets and edit its policy",
            "install separated mode: `sudo aegisctl service install --system` "
            "(README, Security model)",
        )
    return Check("mode", "warn", "unknown: this aegisd does not report its mode", "upgrade it")


def _audit_check(cfg: Config, report: StatusReport | None) -> Check:
    path = cfg.audit_path()
    if not path.exists():
        return Check("audit", "warn", f"{path} does not exist yet", "aegisd creates it at start")
    ours = report is not None and Path(report.audit_log) == path
    if report is not None and ours and report.audit_tip_seq:
        anchor: tuple[int, str] | None = (report.audit_tip_seq, report.audit_tip_hash)
    else:
        anchor = read_anchor(path).tip
    result = verify_files(path, anchor=anchor)
    if not result.ok:
        return Check(
            "audit",
            "fail",
            result.summary(),
            "the log was changed outside aegisd; keep a copy for investigation",
        )
    warnings = list(report.audit_warnings) if report is not None and ours else []
    if result.pruned and not any("pruned" in w for w in warnings):
        warnings.insert(0, f"{result.pruned} records pruned by rotation ([audit] keep_files)")
    if warnings:
        return Check(
            "audit",
            "warn",
            f"{result.summary()}; " + "; ".join(warnings),
            "keep_files = 0 keeps every rotated file; a flooding client shows in "
            "`aegisctl audit tail` as refusals_suppressed records",
        )
    return Check("audit", "warn" if result.warnings else "ok", result.summary())


def _service_check() -> Check:
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        tool = shutil.which("launchctl")
        cmd = [tool or "launchctl", "print", f"gui/{os.getuid()}/dev.aegis.aegisd"]
    else:
        tool = shutil.which("systemctl")
        cmd = [tool or "systemctl", "--user", "is-active", "aegisd.socket", "aegisd.service"]
    if tool is None:
        return Check("service", "warn", "no service manager found", "run aegisd by hand: aegisd")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return Check("service", "warn", "service manager did not answer", "")
    if out.returncode == 0:
        return Check("service", "ok", "installed and active")
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        return Check("service", "warn", "not loaded as a LaunchAgent", "aegisctl service install")
    return _systemd_user_check(out.stdout + out.stderr)


def _systemd_user_check(answer: str) -> Check:
    """Tell "not installed" from "installed, but no user manager runs" and "not started"."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    units = [base / "systemd" / "user" / f"aegisd.{kind}" for kind in ("socket", "service")]
    installed = all(u.exists() for u in units)
    no_manager = (
        "Failed to connect" in answer
        or "No medium found" in answer
        or not (os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("DBUS_SESSION_BUS_ADDRESS"))
    )
    user = os.environ.get("USER") or str(os.getuid())
    if no_manager:
        where = f"units are installed ({units[0].parent})" if installed else "not installed"
        return Check(
            "service",
            "warn",
            f"{where}, but no systemd user manager runs for this session",
            f"loginctl enable-linger {user} (then log in again), or run aegisd by hand: aegisd",
        )
    if installed:
        return Check(
            "service",
            "warn",
            f"units are installed ({units[0].parent}) but not active",
            "systemctl --user enable --now aegisd.socket",
        )
    return Check("service", "warn", "not installed as a user service", "aegisctl service install")


def _runtime_dir_check() -> Check | None:
    """Said once here, not on every command: the default socket's directory fell back."""
    reason = fallback_reason()
    if reason is None:
        return None
    from aegisd.runtime_dir import user_runtime_dir

    return Check(
        "runtime-dir",
        "warn",
        f"{reason}; the default socket is under {user_runtime_dir()}",
        "log in through a session that sets XDG_RUNTIME_DIR (pam_systemd), or set "
        "[daemon] socket in the config",
    )


def _caller_exe_checks(cfg: Config) -> list[Check]:
    resolved = resolved_executables()
    runs = resolved.aegis_mcp_interpreter or resolved.interpreter
    where = f"aegis-mcp {resolved.aegis_mcp} runs {runs}" if resolved.aegis_mcp else ""
    checks = [
        Check("callers-exe", "warn", warning, f"list {runs} in the rule's exe")
        for warning in exe_pattern_warnings(cfg, resolved)
    ]
    if not checks and cfg.callers:
        checks.append(Check("callers-exe", "ok", "every exe pattern matches a file here; " + where))
    return checks


@click.command()
@json_option
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per network check.")
@pass_cli
def doctor(cli: CliContext, as_json: bool, timeout: float) -> None:
    """Check config, socket, daemon, audit, secrets, Auth0, clock and service.

    Reads files, the keyring and the network as well as the socket; changes nothing.
    """
    checks = trio.run(_check_all, cli, timeout)
    failed = any(c.verdict == "fail" for c in checks)
    if as_json:
        emit(DoctorOutput(ok=not failed, checks=[CheckOutput(**asdict(c)) for c in checks]))
    else:
        marks = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}
        colour = colour_enabled()
        for c in checks:
            click.echo(
                f"{verdict(marks[c.verdict], c.verdict, colour=colour)} {c.name}: {c.detail}"
            )
            if c.fix and c.verdict != "ok":
                click.echo(f"       fix: {c.fix}")
    if failed:
        raise click.exceptions.Exit(1)

"""``aegisctl service``: dry runs on both platforms, and install/uninstall in a throwaway HOME.

The service manager is a fake that keeps the state systemctl/launchctl would keep (enabled
and active units, loaded labels), so "uninstall reverses install" is checked on that state as
well as on the files.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aegisctl.context import CliContext
from aegisctl.service import (
    Installation,
    RunResult,
    installed_files,
    make_service_group,
)
from click.testing import CliRunner, Result

from aegisd.errors import ConfigError
from aegisd.service.service_files import LAUNCHD_LABEL

from .systemd_analyze import verify

AEGISD = Path(sys.executable).parent / "aegisd"

# Carrying out the Linux plan through the CLI needs --platform linux to be this machine's.
linux_host = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the Linux plan is carried out on Linux only"
)


class FakeManager:
    """Just enough systemctl --user and launchctl to observe what the plans do."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.reloads = 0
        self.loaded: dict[str, Path] = {}
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> RunResult:
        args = tuple(argv)
        self.calls.append(args)
        if self.fail and self.fail in " ".join(args):
            return RunResult(1, "", "Failed to connect to bus: No medium found")
        match args:
            case ("systemctl", "--user", "daemon-reload"):
                self.reloads += 1
            case ("systemctl", "--user", "enable", "--now", *units):
                self.enabled |= set(units)
                self.active |= set(units)
            case ("systemctl", "--user", "disable", "--now", *units):
                if not set(units) & (self.enabled | self.active):
                    return RunResult(1, "", "Unit aegisd.socket does not exist.")
                self.enabled -= set(units)
                self.active -= set(units)
            case ("systemctl", "--user", "try-restart", _):
                pass
            case ("launchctl", "bootstrap", _, plist):
                label = plistlib.loads(Path(plist).read_bytes())["Label"]
                if label in self.loaded:
                    return RunResult(37, "", "Bootstrap failed: 37: Operation already in progress")
                self.loaded[label] = Path(plist)
            case ("launchctl", "bootout", target):
                if self.loaded.pop(target.rsplit("/", 1)[1], None) is None:
                    return RunResult(3, "", "Boot-out failed: 3: No such process")
            case ("launchctl", "enable", _):
                pass
            case _:
                return RunResult(0, f"status of {' '.join(args)}\n")
        return RunResult(0)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short on purpose: the macOS socket path under it must fit in sun_path (103 bytes),
    # and pytest's own tmp_path is too deep for that.
    with tempfile.TemporaryDirectory(prefix="aegis-home-", dir="/tmp") as short:
        home = Path(short)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        monkeypatch.delenv("AEGIS_CONFIG", raising=False)
        yield home


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "aegisd.toml"
    path.parent.mkdir()
    path.write_text("[daemon]\nlog_level = 'info'\n")
    return path


def invoke(manager: FakeManager, config: Path, *args: str) -> Result:
    group = make_service_group(manager)
    return CliRunner().invoke(
        group, list(args), obj=CliContext(socket_path=None, config_path=str(config))
    )


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_linux_dry_run_prints_every_file_and_command_and_changes_nothing(
    home: Path, config: Path
) -> None:
    manager = FakeManager()
    result = invoke(manager, config, "install", "--dry-run", "--platform", "linux")

    assert result.exit_code == 0, result.output
    assert manager.calls == [] and tree(home) == {}
    unit_dir = home / ".config" / "systemd" / "user"
    lines = result.stdout.splitlines()
    actions = [line for line in lines if line.startswith("would ")]
    assert actions == [
        f"would create directory {unit_dir} (mode 0755)",
        f"would write {unit_dir / 'aegisd.service'} (mode 0644)",
        f"would write {unit_dir / 'aegisd.socket'} (mode 0644)",
        "would run: systemctl --user daemon-reload",
        "would run: systemctl --user enable --now aegisd.socket",
        "would run: systemctl --user try-restart aegisd.service",
    ]
    assert f"    ExecStart={AEGISD} --config {config}" in lines
    assert "    ListenStream=%t/aegis/aegisd.sock" in lines
    assert "loginctl enable-linger" in result.stdout


def test_macos_dry_run_prints_the_plist_and_launchctl_commands(home: Path, config: Path) -> None:
    manager = FakeManager()
    result = invoke(manager, config, "install", "--dry-run", "--platform", "macos")

    assert result.exit_code == 0, result.output
    assert manager.calls == [] and tree(home) == {}
    plist_path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    uid = os.getuid()
    actions = [line for line in result.stdout.splitlines() if line.startswith("would ")]
    assert actions == [
        f"would create directory {home / 'Library' / 'LaunchAgents'} (mode 0755)",
        f"would create directory {home / 'Library' / 'Logs' / 'aegis'} (mode 0700)",
        f"would create directory {home / 'Library/Caches/TemporaryItems/aegis'} (mode 0700)",
        f"would run: launchctl bootout gui/{uid}/{LAUNCHD_LABEL}  (a failure here is ignored)",
        f"would write {plist_path} (mode 0644)",
        f"would run: launchctl enable gui/{uid}/{LAUNCHD_LABEL}",
        f"would run: launchctl bootstrap gui/{uid} {plist_path}",
    ]
    # The printed plist is the one install would write, and it parses.
    start = result.stdout.index("    <?xml")
    end = result.stdout.index("</plist>") + len("</plist>")
    printed = "\n".join(line[4:] for line in result.stdout[start:end].splitlines())
    plist = plistlib.loads(printed.encode())
    assert plist["ProgramArguments"] == [str(AEGISD), "--config", str(config)]
    assert plist["Sockets"]["Listeners"]["SockPathName"] == str(
        home / "Library/Caches/TemporaryItems/aegis/aegisd.sock"
    )


@linux_host
def test_linux_install_then_uninstall_leaves_nothing_behind(home: Path, config: Path) -> None:
    manager = FakeManager()
    installed = invoke(manager, config, "install", "--platform", "linux")

    assert installed.exit_code == 0, installed.output
    unit_dir = home / ".config" / "systemd" / "user"
    service = (unit_dir / "aegisd.service").read_text()
    assert f"ExecStart={AEGISD} --config {config}\n" in service
    assert stat.S_IMODE((unit_dir / "aegisd.socket").stat().st_mode) == 0o644
    assert manager.enabled == {"aegisd.socket"} and manager.active == {"aegisd.socket"}
    assert manager.reloads == 1

    status = invoke(manager, config, "status", "--platform", "linux")
    assert f"{unit_dir / 'aegisd.service'}: installed\n" in status.stdout

    if shutil.which("systemd-analyze"):
        proc = verify(unit_dir, home)
        assert (proc.returncode, proc.stderr) == (0, "")

    removed = invoke(manager, config, "uninstall", "--platform", "linux")
    assert removed.exit_code == 0, removed.output
    assert tree(home) == {}
    assert manager.enabled == set() and manager.active == set()
    assert manager.reloads == 2

    # Uninstalling again is harmless: nothing to disable, nothing to remove.
    again = invoke(manager, config, "uninstall", "--platform", "linux")
    assert again.exit_code == 0, again.output
    assert "ignored" in again.stdout and "already absent" in again.stdout


def test_macos_plans_round_trip_in_a_tmp_home(home: Path, config: Path) -> None:
    # The macOS plan, carried out on this machine with the fake launchctl.
    import aegisctl.service as svc

    inst = Installation(
        platform="macos",
        home=home,
        uid=501,
        user="you",
        aegisd=AEGISD,
        config=config,
        socket=None,
    )
    manager = FakeManager()
    svc.apply(svc.plan_install(inst), manager, dry_run=False)
    plist_path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert plist_path.read_bytes() == installed_files(inst)[plist_path]
    assert manager.loaded == {LAUNCHD_LABEL: plist_path}
    sock_dir = home / "Library/Caches/TemporaryItems/aegis"
    assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700

    # Installing again replaces the loaded job instead of failing on "already loaded".
    svc.apply(svc.plan_install(inst), manager, dry_run=False)
    assert manager.loaded == {LAUNCHD_LABEL: plist_path}

    svc.apply(svc.plan_uninstall(inst), manager, dry_run=False)
    assert manager.loaded == {}
    assert not plist_path.exists()


@linux_host
def test_a_failing_command_stops_the_install_and_says_why(home: Path, config: Path) -> None:
    manager = FakeManager(fail="enable")
    result = invoke(manager, config, "install", "--platform", "linux")

    assert result.exit_code == 1
    assert "systemctl --user enable --now aegisd.socket` failed (exit 1)" in result.output
    assert "No medium found" in result.output
    assert ("systemctl", "--user", "try-restart", "aegisd.service") not in manager.calls


def test_install_refuses_a_missing_or_invalid_config(home: Path, tmp_path: Path) -> None:
    manager = FakeManager()
    missing = invoke(manager, tmp_path / "nope.toml", "install", "--platform", "linux")
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nno_such_key = 1\n")
    invalid = invoke(manager, bad, "install", "--platform", "linux", "--dry-run")

    assert isinstance(missing.exception, ConfigError)
    assert "config file not found" in missing.exception.message
    assert isinstance(invalid.exception, ConfigError)
    assert manager.calls == [] and tree(home) == {}


def test_another_platform_needs_dry_run(home: Path, config: Path) -> None:
    other = "macos" if sys.platform.startswith("linux") else "linux"
    result = invoke(FakeManager(), config, "install", "--platform", other)
    assert result.exit_code == 2
    assert "needs --dry-run" in result.output
    assert tree(home) == {}


@linux_host
def test_status_reports_a_stale_unit(home: Path, config: Path) -> None:
    manager = FakeManager()
    assert invoke(manager, config, "install", "--platform", "linux").exit_code == 0
    unit = home / ".config" / "systemd" / "user" / "aegisd.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=always"))

    status = invoke(manager, config, "status", "--platform", "linux")
    assert f"{unit}: installed, but differs" in status.stdout
    assert "$ systemctl --user --no-pager --lines=0 status aegisd.socket aegisd.service" in (
        status.stdout
    )


@linux_host
def test_install_without_a_user_manager_says_what_to_do_and_writes_nothing(
    home: Path, config: Path
) -> None:
    manager = FakeManager(fail="show-environment")
    result = invoke(manager, config, "install", "--platform", "linux")

    assert result.exit_code == 1
    assert "no systemd user manager is running" in result.output
    assert "loginctl enable-linger" in result.output
    assert "service install --system" in result.output
    assert tree(home) == {}
    assert manager.calls == [("systemctl", "--user", "show-environment")]


@linux_host
def test_status_exits_non_zero_when_not_installed_or_not_running(home: Path, config: Path) -> None:
    assert invoke(FakeManager(), config, "status", "--platform", "linux").exit_code == 1
    assert invoke(FakeManager(), config, "install", "--platform", "linux").exit_code == 0
    assert invoke(FakeManager(), config, "status", "--platform", "linux").exit_code == 0
    stopped = invoke(FakeManager(fail="status"), config, "status", "--platform", "linux")
    assert stopped.exit_code == 3


@linux_host
def test_no_start_writes_the_units_but_starts_nothing(home: Path, config: Path) -> None:
    manager = FakeManager()
    result = invoke(manager, config, "install", "--platform", "linux", "--no-start")
    assert result.exit_code == 0, result.output
    assert manager.active == set() and manager.reloads == 1
    assert (home / ".config" / "systemd" / "user" / "aegisd.service").is_file()

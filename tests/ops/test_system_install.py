"""``aegisctl service install|uninstall|status --system``: plans, dry runs and the system units.

Nothing here creates an account or writes outside tmp: dry runs and plans only (the real
install runs in tests/separated, the one suite allowed to create the ``aegis`` account).
"""

from __future__ import annotations

import os
import plistlib
import pwd
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from aegisctl.context import CliContext
from aegisctl.install_steps import MakeDir, RemoveTree, Run, WriteFile
from aegisctl.service import make_service_group
from aegisctl.system_install import installation_problems
from aegisctl.system_plan import (
    MACOS_CLIENTS_GID,
    MACOS_DAEMON_UID,
    SystemInstallation,
    plan_system_install,
    plan_system_uninstall,
    render_system_config,
    system_files,
)
from click.testing import CliRunner, Result

from aegisd.accounts import system_layout
from aegisd.config import DaemonConfig
from aegisd.errors import ConfigError
from aegisd.service.system_service_files import render_system_service, render_system_socket

from .systemd_analyze import needs_systemd_analyze
from .test_service_cli import FakeManager

AEGISD = Path(sys.executable).parent / "aegisd"
PERSON = "nobody"  # exists on every Debian; the dry run only looks it up
CONFIG = """\
[daemon]
log_level = "info"
allowed_uids = [4242]
socket = "/tmp/elsewhere.sock"

[secrets]
backend = "env"

[[callers]]
name = "agent"
uids = [4242]
argv = ["*python* agent.py*"]
actions = ["demo.read"]

[[callers]]
name = "pinned"
exe = ["/usr/bin/python3*"]
actions = ["demo.read"]

[actions."demo.read"]
approval = "none"
binding_message = "Read {repo}"
params = { repo = "[a-z]+" }
"""

LINUX = system_layout("linux")
MACOS = system_layout("macos")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "current.toml"
    path.write_text(CONFIG)
    return path


def invoke(manager: FakeManager, *args: str) -> Result:
    group = make_service_group(manager)
    return CliRunner().invoke(group, list(args), obj=CliContext(socket_path=None, config_path=None))


def nobody_uid() -> int:
    return pwd.getpwnam(PERSON).pw_uid


def installation(platform: str = "linux", **kw: object) -> SystemInstallation:
    layout = MACOS if platform == "macos" else LINUX
    text = render_system_config(CONFIG.encode(), "current.toml", layout, 1000)
    args: dict[str, object] = {
        "platform": platform,
        "layout": layout,
        "aegisd": Path("/opt/aegis/bin/aegisd"),
        "person": "alice",
        "config_text": text,
        **kw,
    }
    return SystemInstallation(**args)  # type: ignore[arg-type]


def test_system_config_gets_the_system_layout_and_keeps_the_policy() -> None:
    text = render_system_config(CONFIG.encode(), "current.toml", LINUX, 1000)
    got = tomllib.loads(text.decode())
    want = tomllib.loads(CONFIG)

    expected: dict[str, object] = {
        "log_level": "info",
        "socket": "/run/aegis/aegisd.sock",
        "audit_log": "/var/lib/aegis/audit.jsonl",
        "allowed_uids": [1000, 4242],
    }
    # written where the daemon knows the keys (the separated-mode daemon changes)
    if "socket_group" in DaemonConfig.__struct_fields__:
        expected["socket_group"] = "aegis-clients"
    if "policy_file" in DaemonConfig.__struct_fields__:
        expected["policy_file"] = "/var/lib/aegis/policy.toml"
    assert got["daemon"] == expected
    assert got["secrets"] == {"backend": "file", "dir": "/var/lib/aegis/secrets"}
    assert got["callers"] == want["callers"] and got["actions"] == want["actions"]


def test_an_invalid_source_config_is_reported_against_its_own_file() -> None:
    with pytest.raises(ConfigError, match=r"current.toml:\d+: key daemon.*log_levle"):
        render_system_config(b"[daemon]\nlog_levle = 1\n", "current.toml", LINUX, 1000)


def test_linux_dry_run_prints_every_step_and_file_and_changes_nothing(config: Path) -> None:
    manager = FakeManager()
    result = invoke(
        manager,
        "install",
        "--system",
        "--dry-run",
        "--platform",
        "linux",
        "--person",
        PERSON,
        "--config",
        str(config),
    )

    assert result.exit_code == 0, result.output
    assert manager.calls == []
    actions = [line for line in result.stdout.splitlines() if line.startswith("would ")]
    for expected in [
        "would create directory /etc/aegis (mode 0750, root:aegis)",
        "would write /etc/aegis/aegisd.toml (mode 0640, root:aegis)",
        "would create directory /var/lib/aegis (mode 0700, aegis:aegis)",
        "would create directory /var/lib/aegis/secrets (mode 0700, aegis:aegis)",
        "would create directory /run/aegis (mode 0750, aegis:aegis-clients)",
        "would write /etc/systemd/system/aegisd.service (mode 0644)",
        "would write /etc/systemd/system/aegisd.socket (mode 0644)",
        "would write /etc/tmpfiles.d/aegis.conf (mode 0644)",
    ]:
        assert expected in actions, result.stdout
    if not os.path.isdir("/run/systemd/system"):
        assert "    sudo runuser -u aegis -- " in result.stdout
        assert f"{AEGISD} --config /etc/aegis/aegisd.toml" in result.stdout
    assert f"    allowed_uids = [4242, {nobody_uid()}]" in result.stdout
    assert "    SocketMode=0660" in result.stdout and "    User=aegis" in result.stdout
    # exe rules cannot match across uids: the person is told
    assert "caller rules 'pinned' check the executable" in result.stdout
    # this venv is under /root: a real run would refuse, and the dry run says so
    if installation_problems([(Path(sys.executable), True)]):
        assert "a real run would stop here" in result.stderr
        assert "/usr/bin/python3 -m venv /opt/aegis" in result.stderr


def test_the_plan_creates_only_what_is_missing() -> None:
    fresh = plan_system_install(installation(service_manager=True))
    again = plan_system_install(
        installation(
            service_manager=True,
            have_clients_group=True,
            have_account=True,
            have_account_group=True,
            account_in_group=True,
            person_in_group=True,
        )
    )
    runs = [s.argv[0] for s in fresh if isinstance(s, Run)]
    assert runs[:3] == ["groupadd", "useradd", "usermod"]
    assert "--user-group" in next(
        s.argv for s in fresh if isinstance(s, Run) and "useradd" in s.argv
    )
    assert [s.argv[0] for s in again if isinstance(s, Run)] == ["systemctl"] * 3
    assert Run(("systemctl", "enable", "--now", "aegisd.socket")) in again
    no_start = plan_system_install(installation(service_manager=True, start=False))
    assert [s.argv for s in no_start if isinstance(s, Run) and s.argv[0] == "systemctl"] == [
        ("systemctl", "daemon-reload")
    ]
    # an existing group "aegis" (from an earlier account) is reused, not re-created
    reused = plan_system_install(installation(have_account_group=True))
    useradd = next(s.argv for s in reused if isinstance(s, Run) and "useradd" in s.argv)
    assert useradd[2:4] == ("--gid", "aegis")


def test_uninstall_keeps_the_audit_log_and_accounts_unless_purge() -> None:
    keep = plan_system_uninstall(
        "linux",
        LINUX,
        service_manager=False,
        purge=False,
        have_account=True,
        have_clients_group=True,
    )
    purge = plan_system_uninstall(
        "linux",
        LINUX,
        service_manager=False,
        purge=True,
        have_account=True,
        have_clients_group=True,
    )
    assert RemoveTree(Path("/var/lib/aegis")) not in keep
    assert RemoveTree(Path("/var/lib/aegis/secrets")) in keep
    assert RemoveTree(Path("/etc/aegis")) in keep and RemoveTree(Path("/run/aegis")) in keep
    assert RemoveTree(Path("/etc/systemd/system/aegisd.service.d")) in keep
    assert not any(isinstance(s, Run) for s in keep)
    assert RemoveTree(Path("/var/lib/aegis")) in purge
    assert [s.argv for s in purge if isinstance(s, Run)] == [
        ("userdel", "aegis"),
        ("groupdel", "aegis-clients"),
    ]


def test_macos_dry_run_creates_the_accounts_with_dscl_and_a_launch_daemon(config: Path) -> None:
    result = invoke(
        FakeManager(),
        "install",
        "--system",
        "--dry-run",
        "--platform",
        "macos",
        "--person",
        PERSON,
        "--config",
        str(config),
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "would run: dscl . -create /Users/_aegis UniqueID 481" in out
    assert "would run: dscl . -create /Users/_aegis UserShell /usr/bin/false" in out
    assert "would run: dseditgroup -o edit -a nobody -t user aegis-clients" in out
    assert (
        "would write /Library/LaunchDaemons/dev.aegis.aegisd.plist (mode 0644, root:wheel)" in out
    )
    assert "would create directory /var/run/aegis (mode 0750, _aegis:aegis-clients)" in out
    assert (
        "would run: launchctl bootstrap system /Library/LaunchDaemons/dev.aegis.aegisd.plist" in out
    )
    assert '    socket = "/var/run/aegis/aegisd.sock"' in out


def test_launch_daemon_plist_runs_as_aegis_with_a_group_socket() -> None:
    [(path, data)] = system_files(installation("macos")).items()
    plist = plistlib.loads(data)

    assert path == Path("/Library/LaunchDaemons/dev.aegis.aegisd.plist")
    assert plist["UserName"] == "_aegis" and plist["GroupName"] == "_aegis"
    assert plist["ProgramArguments"] == [
        "/opt/aegis/bin/aegisd",
        "--config",
        "/Library/Application Support/Aegis/aegisd.toml",
    ]
    sock = plist["Sockets"]["Listeners"]
    assert sock["SockPathName"] == "/var/run/aegis/aegisd.sock"
    assert sock["SockPathMode"] == 432 == 0o660
    assert sock["SockPathOwner"] == MACOS_DAEMON_UID
    assert sock["SockPathGroup"] == MACOS_CLIENTS_GID
    assert b"<integer>432</integer>" in data
    assert plist["Umask"] == 0o077


def test_the_layout_steps_give_every_directory_its_owner_and_mode() -> None:
    steps = plan_system_install(installation())
    dirs = {s.path: (s.mode, s.owner, s.group) for s in steps if isinstance(s, MakeDir)}
    assert dirs[Path("/etc/aegis")] == (0o750, "root", "aegis")
    assert dirs[Path("/var/lib/aegis")] == (0o700, "aegis", "aegis")
    assert dirs[Path("/var/lib/aegis/secrets")] == (0o700, "aegis", "aegis")
    assert dirs[Path("/run/aegis")] == (0o750, "aegis", "aegis-clients")
    [cfg] = [s for s in steps if isinstance(s, WriteFile) and s.path == LINUX.config]
    assert (cfg.mode, cfg.owner, cfg.group) == (0o640, "root", "aegis")


def test_an_installation_under_a_private_directory_is_reported() -> None:
    # under /tmp itself: pytest's tmp_path sits in a 0700 directory
    with tempfile.TemporaryDirectory(prefix="aegis-inst-", dir="/tmp") as short:
        check_private_installation(Path(short))


def check_private_installation(tmp_path: Path) -> None:
    private = tmp_path / "home"
    (private / "venv" / "bin").mkdir(parents=True)
    exe = private / "venv" / "bin" / "aegisd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for p in (tmp_path, private, private / "venv", private / "venv" / "bin"):
        p.chmod(0o755)
    assert installation_problems([(exe, True)]) == []
    private.chmod(0o700)
    problems = installation_problems([(exe, True)])
    assert problems == [f"{private}: mode 0700, owner uid {os.getuid()}: others cannot enter it"]
    private.chmod(0o755)
    exe.chmod(0o750)
    assert installation_problems([(exe, True)]) == [
        f"{exe}: mode 0750, owner uid {os.getuid()}: others cannot read or execute it"
    ]


def test_install_system_needs_root_and_a_person(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    result = invoke(FakeManager(), "install", "--system", "--dry-run", "--config", str(config))
    assert result.exit_code != 0 and "--person" in str(result.exception or result.output)
    root = invoke(
        FakeManager(),
        "install",
        "--system",
        "--dry-run",
        "--person",
        "root",
        "--config",
        str(config),
    )
    assert root.exit_code != 0


@needs_systemd_analyze
@pytest.mark.parametrize(("verify_exe", "ceiling"), [(False, 2.0), (True, 2.0)])
def test_system_units_verify_and_score_at_most_the_ceiling(
    tmp_path: Path, verify_exe: bool, ceiling: float
) -> None:
    import subprocess

    units = tmp_path / "units"
    units.mkdir()
    (units / "aegisd.service").write_text(
        render_system_service(str(AEGISD), LINUX, verify_exe=verify_exe)
    )
    (units / "aegisd.socket").write_text(render_system_socket(LINUX))

    def analyze(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemd-analyze", *args], cwd=units, capture_output=True, text=True, timeout=30
        )

    verify = analyze("verify", "./aegisd.service", "./aegisd.socket")
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = analyze("security", "--offline=true", "./aegisd.service")
    line = security.stdout.strip().splitlines()[-1]
    score = float(line.split(": ")[1].split()[0])
    assert score <= ceiling, security.stdout
    text = (units / "aegisd.service").read_text()
    assert "PrivateUsers" not in text and "ProtectProc=default" in text
    if verify_exe:
        assert "CapabilityBoundingSet=CAP_SYS_PTRACE\n" in text
        assert "AmbientCapabilities=CAP_SYS_PTRACE\n" in text
    else:
        assert "CapabilityBoundingSet=\n" in text and "AmbientCapabilities=\n" in text


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here")
def test_systemd_creds_without_systemd_are_refused_before_reading_a_value() -> None:
    from aegisctl.secrets import secrets

    result = CliRunner().invoke(
        secrets,
        ["set", "--system", "--systemd-creds", "auth0_client_secret"],
        input="never-read\n",
        obj=CliContext(socket_path=None, config_path=None),
    )
    assert result.exit_code != 0
    assert "systemd is not running here" in str(result.exception)
    assert "never-read" not in result.output

"""CLI conventions shared by aegisctl, aegisd and aegis-mcp (issue 16, items 16 and 17).

Click's runner where no process is needed; real subprocesses for the console scripts,
completion and the environment without ``XDG_RUNTIME_DIR``.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import click
import pytest
from aegisctl.main import COMMANDS, cli
from aegisctl.output import colour_enabled, verdict
from click.testing import CliRunner

from aegisd.errors import DaemonUnavailable
from tests.corekit import AEGISCTL, AEGISD, BIN, Files, child_env


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        paths.append([name])
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in command.commands]
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "aegisctl")
def test_dash_h_is_help_everywhere(path: list[str]) -> None:
    short = CliRunner().invoke(cli, [*path, "-h"])
    long = CliRunner().invoke(cli, [*path, "--help"])
    assert short.exit_code == 0, short.output
    assert short.output == long.output and "-h, --help" in short.output


@pytest.mark.parametrize("script", ["aegisd", "aegis-mcp"])
def test_the_other_commands_share_the_style(script: str) -> None:
    done = subprocess.run(
        [str(BIN / script), "-h"], capture_output=True, text=True, env=child_env(), timeout=30
    )
    assert done.returncode == 0
    assert done.stdout.startswith(f"Usage: {script} [OPTIONS]")
    assert "-h, --help" in done.stdout and "--version" in done.stdout


def test_help_summaries_are_not_cut_off() -> None:
    out = CliRunner().invoke(cli, ["-h"]).output
    assert "..." not in out.split("Commands:", 1)[1]
    assert "Check config, socket, daemon, audit, secrets, Auth0, clock and" in out
    policy = CliRunner().invoke(cli, ["policy", "-h"]).output
    assert "Print every problem in a config file; show each phone message." in policy


def test_global_options_after_the_subcommand(tmp_path: Path) -> None:
    sock = tmp_path / "elsewhere.sock"
    result = CliRunner().invoke(cli, ["status", "--socket", str(sock)])
    assert isinstance(result.exception, DaemonUnavailable)  # main() turns it into exit 3
    assert str(sock) in result.exception.message


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert colour_enabled(Tty(), {}) is True
    assert colour_enabled(Tty(), {"NO_COLOR": "1"}) is False
    assert colour_enabled(io.StringIO(), {}) is False
    assert verdict("[FAIL]", "fail", colour=True) != "[FAIL]"
    assert verdict("[FAIL]", "fail", colour=False) == "[FAIL]"


def test_doctor_output_has_no_escape_codes_off_a_terminal(write_config: object) -> None:
    files: Files = write_config()  # type: ignore[operator]
    out = subprocess.run(
        [str(AEGISCTL), "--config", str(files.config), "doctor", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    ).stdout
    assert "[FAIL]" in out and "\x1b[" not in out


def test_shell_completion_is_clicks() -> None:
    env = child_env(
        {"_AEGISCTL_COMPLETE": "bash_complete", "COMP_WORDS": "aegisctl sta", "COMP_CWORD": "1"}
    )
    done = subprocess.run([str(AEGISCTL)], capture_output=True, text=True, env=env, timeout=30)
    assert "status" in done.stdout


def test_no_runtime_dir_warning_and_doctor_says_it_once(write_config: object) -> None:
    files: Files = write_config()  # type: ignore[operator]
    env = {k: v for k, v in child_env().items() if k != "XDG_RUNTIME_DIR"}
    status = subprocess.run(
        [str(AEGISCTL), "status"], capture_output=True, text=True, env=env, timeout=30
    )
    assert status.returncode == 3
    assert "RuntimeDirWarning" not in status.stderr and "Warning" not in status.stderr
    doctor = subprocess.run(
        [str(AEGISCTL), "--config", str(files.config), "doctor", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "Warning" not in doctor.stderr
    lines = [line for line in doctor.stdout.splitlines() if "runtime-dir" in line]
    assert len(lines) == 1 and "XDG_RUNTIME_DIR is not set" in lines[0]


def test_runtime_dir_fallback_is_private_and_quiet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aegisd.runtime_dir import fallback_reason, user_runtime_dir

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert fallback_reason() == "XDG_RUNTIME_DIR is not set"
    chosen = user_runtime_dir()
    system = Path(f"/run/user/{os.getuid()}")
    assert chosen in (
        system / "aegis",
        Path(os.environ.get("TMPDIR", "/tmp")) / f"aegis-{os.getuid()}",
    )
    tmp_path.chmod(0o755)  # not private: refused, like platformdirs does
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert "mode 755" in (fallback_reason() or "")
    tmp_path.chmod(0o700)
    assert fallback_reason() is None and user_runtime_dir() == tmp_path / "aegis"


def test_aegisd_version_uses_the_distribution_name() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [str(AEGISD), "--version"], capture_output=True, text=True, env=child_env(), timeout=30
    )
    assert version("aegis-broker") in done.stdout

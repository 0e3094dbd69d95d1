"""Issue 13.9: aegisd refuses a config another account could have changed.

Each test drives the real ``aegisd`` or ``aegisctl`` in a subprocess: a group-writable,
world-writable, foreign-owned or symlinked config, or one in a directory others may write,
is refused at start with the reason and the command that fixes it; a reload of a config made
unsafe fails and keeps the old policy; ``policy check`` and ``doctor`` report it. The
separated-mode layout (root:aegis 0640) is in ``tests/crossuid/test_trusted_config.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from aegisd import wire
from tests.corekit import (
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    run_ctl,
    status_roundtrip,
    wait_for_record,
)

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


def refused(spawn_daemon: Spawn, files: Files) -> str:
    """Start a daemon that must refuse its config (exit 78); return its stderr."""
    err = spawn_daemon(files, start=False).refused(78)
    assert not files.socket.exists()  # refused before it listened or touched the audit log
    assert not files.audit.exists()
    return err


def test_a_group_writable_config_is_refused_at_start(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    files.config.chmod(0o664)
    err = refused(spawn_daemon, files)
    assert f"aegisd: {files.config}: the config is group-writable (mode 0664)" in err
    assert f"fix: chmod go-w {files.config}" in err


def test_a_world_writable_config_is_refused_at_start(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    files.config.chmod(0o646)
    err = refused(spawn_daemon, files)
    assert f"{files.config}: the config is world-writable (mode 0646)" in err
    assert f"fix: chmod go-w {files.config}" in err


def test_a_config_owned_by_another_uid_is_refused_at_start(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another uid (CI runs as root)")
    files = write_config()
    os.chown(files.config, 54321, -1)  # a throwaway uid; no account needed
    err = refused(spawn_daemon, files)
    assert f"{files.config}: the config is owned by uid 54321, not by root" in err
    assert f"fix: sudo chown root {files.config}" in err


def test_a_symlinked_config_is_refused(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    real = files.root / "real.toml"
    files.config.rename(real)
    files.config.symlink_to(real)  # a safe target: the link itself is what is refused
    err = refused(spawn_daemon, files)
    assert f"{files.config}: the config is a symlink; aegisd does not follow one here" in err


def test_a_config_in_a_directory_others_can_write_is_refused(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    shared = aeg_root / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could replace the file
    files = write_config(root=shared)
    err = refused(spawn_daemon, files)
    assert f"{shared}: a directory above the config {files.config} is writable by others" in err
    assert f"fix: chmod go-w {shared}" in err


def test_the_fix_it_prints_works(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    files.config.chmod(0o666)
    err = refused(spawn_daemon, files)
    fix = err.split("fix: ", 1)[1].strip()
    subprocess.run(fix, shell=True, check=True, timeout=10)
    d = spawn_daemon(files)  # READY
    assert status_roundtrip(files.socket).pid == d.pid


def test_a_reload_of_a_config_made_unsafe_fails_and_keeps_the_policy(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    d = spawn_daemon(files)
    # the new text would add an action; the file is now writable by everyone
    files.config.write_text(
        files.config.read_text() + '\n[actions."demo.added"]\napproval = "none"\n'
        'delivery = "token"\n'
    )
    files.config.chmod(0o666)
    done = run_ctl(files, "reload")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "the config is group- and world-writable (mode 0666)" in done.stderr
    assert "reload failed: the daemon keeps its current policy" in done.stderr
    failed = wait_for_record(files.audit, lambda r: r["event"] == "reload_failed")
    assert any("world-writable" in str(p) for p in failed["problems"])  # type: ignore[union-attr]
    # SIGHUP takes the same path
    d.send_signal(signal.SIGHUP)
    wait_for_record(
        files.audit,
        lambda r: r["event"] == "reload_failed" and r["seq"] != failed["seq"],
    )
    with RawClient(files.socket) as c:
        c.hello()
        answer = c.ask(wire.ListActions(id=c.next_id()))
    assert isinstance(answer, wire.Actions), answer
    assert [a.name for a in answer.actions] == ["demo.read"]  # the old policy
    assert "reloaded" not in [r["event"] for r in audit_records(files.audit)]
    d.assert_no_crash()


def test_policy_check_reports_an_unsafe_config(write_config: WriteConfig) -> None:
    files = write_config()
    files.config.chmod(0o664)
    done = run_ctl(None, "policy", "check", str(files.config))
    assert done.returncode == 78, done.stdout
    assert "the config is group-writable (mode 0664)" in done.stderr
    assert f"fix: chmod go-w {files.config}" in done.stderr
    as_json = run_ctl(None, "policy", "check", "--json", str(files.config))
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False
    assert any("group-writable" in p["message"] for p in doc["problems"])
    files.config.chmod(0o644)  # the default mode of a file written here: accepted
    assert run_ctl(None, "policy", "check", str(files.config)).returncode == 0


def test_doctor_fails_the_config_with_a_fix_that_works(write_config: WriteConfig) -> None:
    files = write_config()
    files.config.chmod(0o646)

    def config_check() -> tuple[int, dict[str, str]]:
        done = run_ctl(files, "doctor", "--json", "--timeout", "1", timeout=60)
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        return done.returncode, checks["config"]

    code, check = config_check()
    assert code == 1
    assert check["verdict"] == "fail"
    assert "the config is world-writable (mode 0646)" in check["detail"]
    assert check["fix"] == f"chmod go-w {files.config}"
    subprocess.run(check["fix"], shell=True, check=True, timeout=10)
    assert config_check()[1]["verdict"] == "ok"

"""What got in a newcomer's way (issue 16): each fix, with the real daemon where it matters.

Items: 6 (rejected callers are explained and logged), 7 (one line instead of a traceback),
8 (missing secrets found at start), 10 (doctor's fixes work), 13 (audit reads the daemon's
log), 14 (a denial is a correct outcome of the demo).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.corekit import AEGISCTL, DaemonProcess, Files, child_env, run_ctl

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]

AUTH0_ENV_BACKEND = (
    "[auth0]\n"
    'issuer = "http://127.0.0.1:9/"\n'
    "allow_insecure_http = true\n"
    'client_id = "ops-test"\n'
    'user_id = "auth0|someone"\n'
    "\n[secrets]\n"
    'backend = "env"\n'
)


def test_a_rejected_peer_is_logged_with_what_aegisd_saw(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config(
        callers=[{"name": "nobody", "exe": ["/nonexistent/python"], "actions": ["demo.*"]}]
    )
    daemon = spawn_daemon(files)
    assert run_ctl(files, "status").returncode == 0  # inspection still works
    deadline = time.monotonic() + 10
    while "no [[callers]] rule matches" not in daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.05)
    line = next(x for x in daemon.stderr().splitlines() if "no [[callers]] rule" in x)
    assert " INFO " in line and "aegisd saw exe " in line and "and argv '" in line
    assert "'nobody': exe does not match" in line


def test_missing_secrets_are_a_warning_at_start_and_shown_by_status(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config(extra=AUTH0_ENV_BACKEND)
    daemon = spawn_daemon(files)  # starts: inspection must work without the secret
    report = json.loads(run_ctl(files, "status", "--json").stdout)
    assert report["missing_secrets"] == ["auth0_client_secret"]
    assert "secret auth0_client_secret is missing from the env backend" in daemon.stderr()
    assert "AEGIS_SECRET_AUTH0_CLIENT_SECRET" in daemon.stderr()
    human = run_ctl(files, "status").stdout
    assert "secrets  MISSING auth0_client_secret" in human


def test_doctor_does_not_fail_on_the_keyring_when_nothing_needs_it(
    write_config: WriteConfig,
) -> None:
    files = write_config()  # no [auth0]: no secrets needed
    done = run_ctl(files, "doctor", "--json", "--timeout", "1")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["secrets"]["verdict"] == "ok"
    assert "secrets-backend" not in checks


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl")
def test_doctor_tells_installed_units_without_a_user_manager(
    write_config: WriteConfig, aeg_root: Path
) -> None:
    files = write_config()
    units = aeg_root / "xdg" / "systemd" / "user"
    units.mkdir(parents=True)
    for kind in ("socket", "service"):
        (units / f"aegisd.{kind}").write_text("[Unit]\n")
    env = {
        k: v
        for k, v in child_env({"XDG_CONFIG_HOME": str(aeg_root / "xdg")}).items()
        if k not in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")
    }
    done = subprocess.run(
        [str(AEGISCTL), "--config", str(files.config), "doctor", "--json", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    service = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "service")
    assert (
        "units are installed" in service["detail"]
        and "no systemd user manager" in service["detail"]
    )
    assert service["fix"].startswith("loginctl enable-linger ")
    assert "aegisctl service install" not in service["fix"]


def test_doctor_warns_about_exe_patterns_that_match_nothing(write_config: WriteConfig) -> None:
    files = write_config(
        callers=[{"name": "gone", "exe": ["/usr/bin/python3.99*"], "actions": ["demo.*"]}]
    )
    done = run_ctl(files, "doctor", "--json", "--timeout", "1")
    exe = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "callers-exe"]
    assert {c["verdict"] for c in exe} == {"warn"}
    (pattern,) = [c for c in exe if "matches no file" in c["detail"]]
    assert '"/usr/bin/python3.99*" matches no file' in pattern["detail"]
    assert pattern["fix"].startswith("list /") and pattern["fix"].endswith(" in the rule's exe")
    assert any("matches aegis-mcp as installed here" in c["detail"] for c in exe)


def test_audit_reads_the_log_of_the_daemon_it_talks_to(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    files = write_config()
    spawn_daemon(files)
    broken = aeg_root / "broken.toml"
    broken.write_text('[daemon\naudit_log = "/nowhere/audit.jsonl"\n')  # not even TOML
    base = [str(AEGISCTL), "--config", str(broken), "--socket", str(files.socket)]

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, env=child_env(), timeout=30
        )

    verify = ctl("audit", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["path"] == str(files.audit)
    raw = ctl("audit", "tail", "-n", "50", "--json")
    records = [json.loads(line) for line in raw.stdout.splitlines()]
    assert records and records[0]["event"] == "start" and len(records[0]["hash"]) >= 64
    human = ctl("audit", "tail", "-n", "50").stdout
    assert " start " in human
    assert not re.search(r"[0-9a-f]{40}", human)  # digests are short for people
    assert not re.search(r"\b1[0-9]{9}\.[0-9]", human)  # no epochs
    assert "conn=" not in human and "prev=" not in human


def test_dev_tenant_on_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(AEGISCTL), "dev-tenant", "--port", str(port)],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
    assert done.returncode == 18
    assert done.stderr.splitlines() == [
        f"aegisctl: port {port} on 127.0.0.1 is already in use (another dev tenant?); "
        "choose another with --port, or --port 0 for a free one [already_running]"
    ]


def test_a_denial_in_the_demo_is_a_correct_outcome() -> None:
    done = subprocess.run(
        [str(AEGISCTL), "demo", "--auto", "--deny"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "aegisctl dev-tenant deny --port " in done.stdout
    assert "denied on the phone: aegisd refused the action" in done.stdout
    assert "That is the correct outcome" in done.stdout
    assert "failed step" not in done.stdout + done.stderr


def test_ctrl_c_in_the_demo_is_one_line_and_cleans_up() -> None:
    proc = subprocess.Popen(
        [str(AEGISCTL), "demo", "--interactive"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env({"PYTHONUNBUFFERED": "1"}),
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "From a second terminal instead" in line:
                break
        assert "The push stays valid for" in "".join(seen), "".join(seen)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err and "ExceptionGroup" not in err
    assert err.strip().splitlines()[-1] == "demo interrupted; everything stopped and cleaned up"
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no child left behind

"""Separated mode end to end: the real install, the daemon as ``aegis``, a person of another uid.

Real processes throughout: ``aegisctl service install --system`` from a system-wide venv
(``sysvenv.py``), the secrets piped into ``aegisctl secrets set --system``, the daemon started
the way the README says where systemd is not PID 1 (``runuser -u aegis -- aegisd --config
/etc/aegis/aegisd.toml``) against a dev tenant process, and a throwaway non-root "person" who
runs the SDK and then tries what a prompt-injected agent of theirs would: read the secrets,
change the config, the state or the audit log, signal, trace or read the daemon's memory.

This is the one suite that may create the real ``aegis`` account and ``/etc/aegis``,
``/var/lib/aegis``, ``/run/aegis``; it runs as root only, one run at a time (a lock), refuses
to touch an installation it did not make, and removes everything it made, pass or fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aegisd.toml_text import dumps
from bench.tenantproc import TenantProc

from .sysvenv import system_venv

ACCOUNT = "aegis"
GROUP = "aegis-clients"
CONFIG = Path("/etc/aegis/aegisd.toml")
STATE = Path("/var/lib/aegis")
SECRETS = STATE / "secrets"
RUNTIME = Path("/run/aegis")
SOCKET = RUNTIME / "aegisd.sock"
UNITS = [Path("/etc/systemd/system/aegisd.service"), Path("/etc/systemd/system/aegisd.socket")]
TMPFILES = Path("/etc/tmpfiles.d/aegis.conf")
MADE = [CONFIG.parent, STATE, RUNTIME, *UNITS, TMPFILES]
PROJECT_AEGISCTL = Path(sys.executable).parent / "aegisctl"
HERE = Path(__file__).parent

TOOLS = ("useradd", "userdel", "groupdel", "runuser", "setpriv", "getent")


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "separated mode's end-to-end test runs on Linux"
    if os.geteuid() != 0:
        return (
            "needs root: it creates the 'aegis' account and /etc/aegis, /var/lib/aegis, "
            "/run/aegis (run `sudo .venv/bin/pytest tests/separated` on a throwaway machine)"
        )
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install passwd util-linux)"
    if not Path("/usr/bin/python3").exists():
        return "needs /usr/bin/python3 for a system-wide venv (apt-get install python3-venv)"
    return None


def _exists(db: str, name: str) -> bool:
    return subprocess.run(["getent", db, name], capture_output=True).returncode == 0


def _present() -> list[str]:
    found = [str(p) for p in MADE if os.path.lexists(p)]
    found += [f"account {n}" for n in (ACCOUNT,) if _exists("passwd", n)]
    found += [f"group {n}" for n in (GROUP,) if _exists("group", n)]
    return found


def _run(argv: list[str], *, input: str | None = None, timeout: float = 120) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "NOTIFY_"))}
    return subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, env=env
    )


def _force_cleanup(person: str | None) -> None:
    """Remove whatever this suite made, whatever state a failure left it in."""
    _signal_account(signal.SIGKILL)
    for p in MADE:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    subprocess.run(["userdel", ACCOUNT], capture_output=True)
    subprocess.run(["groupdel", ACCOUNT], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)
    if person:
        subprocess.run(["userdel", person], capture_output=True)


@dataclass
class Person:
    name: str
    uid: int
    gid: int

    def run(self, argv: list[str], **kw: Any) -> Any:
        # --init-groups: the supplementary groups of a fresh login (aegis-clients included)
        prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]
        return _run(prefix + argv, **kw)


@dataclass
class Stack:
    venv: Path
    person: Person
    work: Path  # world-readable scratch directory for the person's scripts
    tenant: TenantProc
    source_config: Path
    daemon: subprocess.Popen[bytes] | None = None
    daemon_log: Path | None = None

    @property
    def aegisctl(self) -> str:
        return str(self.venv / "bin" / "aegisctl")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


@pytest.fixture(scope="module")
def base() -> Iterator[Stack]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    lock = open("/run/lock/aegis-separated-test.lock", "a")  # noqa: SIM115 - closed below
    fcntl.flock(lock, fcntl.LOCK_EX)
    person: str | None = None
    tenant: TenantProc | None = None
    ours = False  # from here on, whatever exists of an installation was made by this suite
    try:
        present = _present()
        if present:
            pytest.skip(
                "an Aegis system installation exists here (" + ", ".join(present) + "); this "
                "suite never touches one it did not make: remove it with `sudo aegisctl service "
                "uninstall --system --purge` first"
            )
        ours = True
        venv = system_venv()
        person = f"aegisp{secrets.token_hex(3)}"
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", person],
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam(person)
        with tempfile.TemporaryDirectory(prefix="aegis-sep-", dir="/tmp") as work_dir:
            work = Path(work_dir)
            work.chmod(0o755)
            tenant = TenantProc(
                work / "tenant", {"interval": 0.5, "auto_approve_ms": 200}, log_level="WARNING"
            )
            raw = tomllib.loads(tenant.config.read_text())
            raw["callers"] = [
                # uids + argv: what a daemon of another uid can check without CAP_SYS_PTRACE
                {
                    "name": "person-sdk",
                    "uids": [pw.pw_uid],
                    "argv": ["* */person_client.py*"],
                    "actions": ["demo.read", "demo.delete"],
                },
                # exe only: cannot match across uids without --verify-exe
                {
                    "name": "exe-pinned",
                    "exe": [os.path.realpath("/usr/bin/python3")],
                    "actions": ["demo.token"],
                },
            ]
            source = work / "current.toml"
            source.write_text(dumps(raw))
            yield Stack(venv, Person(person, pw.pw_uid, pw.pw_gid), work, tenant, source)
    finally:
        if tenant is not None:
            tenant.close()
        if ours:
            _force_cleanup(person)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def test_install_refuses_an_installation_the_account_cannot_run(base: Stack) -> None:
    # the project's own venv: a pyenv Python under /root (0700)
    result = _run(
        [
            str(PROJECT_AEGISCTL),
            "service",
            "install",
            "--system",
            "--no-start",
            "--person",
            base.person.name,
            "--config",
            str(base.source_config),
        ]
    )
    assert result.returncode != 0, f"{PROJECT_AEGISCTL} did not refuse:\n{result.stdout}"
    assert "refusing to install separated mode" in result.stderr
    assert "sudo /usr/bin/python3 -m venv /opt/aegis" in result.stderr
    assert "sudo /opt/aegis/bin/aegisctl service install --system" in result.stderr
    assert _present() == [], "the refused install changed something"


@pytest.fixture(scope="module")
def installed(base: Stack) -> Iterator[Stack]:
    result = _run(
        [
            base.aegisctl,
            "service",
            "install",
            "--system",
            "--no-start",
            "--person",
            base.person.name,
            "--config",
            str(base.source_config),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runuser -u aegis -- " in result.stdout or "systemctl" in result.stdout
    for name, value in base.tenant.secrets_env_vars().items():
        secret = name.removeprefix("AEGIS_SECRET_").lower()
        stored = _run([base.aegisctl, "secrets", "set", "--system", secret], input=value + "\n")
        assert stored.returncode == 0, stored.stderr
        assert value not in stored.stdout + stored.stderr
    # what install made of the socket directory, before the daemon sees it
    st = os.lstat(RUNTIME)

    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
        0o750,
        pwd.getpwnam(ACCOUNT).pw_uid,
        grp.getgrnam(GROUP).gr_gid,
    )
    _start_daemon(base, ["runuser", "-u", ACCOUNT, "--"])
    try:
        yield base
    finally:
        _stop_daemon(base)


def _start_daemon(stack: Stack, prefix: list[str]) -> None:
    """Start aegisd as the account (``prefix`` drops to it) and wait until it answers."""
    log = stack.work / "aegisd.log"
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            [*prefix, str(stack.venv / "bin" / "aegisd"), "--config", str(CONFIG)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "NOTIFY_"))},
        )
    stack.daemon, stack.daemon_log = daemon, log
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            _daemon_peer()
            return
        if daemon.poll() is not None or time.monotonic() > deadline:
            _stop_daemon(stack)
            pytest.fail(f"aegisd did not come up:\n{log.read_text()}")
        time.sleep(0.05)


def _stop_daemon(stack: Stack) -> None:
    """SIGTERM (runuser passes it on), then wait until no process of the account is left."""
    if stack.daemon is None or stack.daemon.poll() is not None:
        return
    stack.daemon.send_signal(signal.SIGTERM)
    try:
        stack.daemon.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _signal_account(signal.SIGKILL)
        stack.daemon.wait(timeout=5)
    # runuser may return while aegisd is still finishing its shutdown
    deadline = time.monotonic() + 15
    while _account_pids():
        if time.monotonic() > deadline:
            _signal_account(signal.SIGKILL)
        time.sleep(0.05)


def _account_pids() -> list[int]:
    """Processes of the daemon's account: only this suite's (it never runs beside another)."""
    if not _exists("passwd", ACCOUNT):
        return []
    found = subprocess.run(["pgrep", "-u", ACCOUNT], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _signal_account(signum: int) -> None:
    for pid in _account_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _daemon_peer() -> tuple[int, int, int]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(SOCKET))
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def test_the_layout_has_the_owners_and_modes_of_the_design(installed: Stack) -> None:
    aegis = pwd.getpwnam(ACCOUNT)
    assert aegis.pw_shell == "/usr/sbin/nologin" and aegis.pw_dir == str(STATE)
    assert aegis.pw_uid < 1000  # a system account

    def mode_owner(p: Path) -> tuple[str, str, str]:
        st = os.lstat(p)

        return (
            oct(st.st_mode & 0o7777),
            pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name,
        )

    assert mode_owner(CONFIG) == ("0o640", "root", ACCOUNT)
    assert mode_owner(STATE) == ("0o700", ACCOUNT, ACCOUNT)
    assert mode_owner(SECRETS) == ("0o700", ACCOUNT, ACCOUNT)
    for f in SECRETS.iterdir():
        assert mode_owner(f) == ("0o600", ACCOUNT, ACCOUNT), f
    assert sorted(f.name for f in SECRETS.iterdir()) == [
        "auth0_client_secret",
        "management_client_secret",
        "token_vault_client_secret",  # the dev tenant's Custom API Client (docs/AUTH0.md)
    ]
    pid, uid, _ = _daemon_peer()
    assert uid == aegis.pw_uid and pid > 0
    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["daemon"]["allowed_uids"] == [installed.person.uid]
    assert cfg["secrets"] == {"backend": "file", "dir": str(SECRETS)}
    service = _run([installed.aegisctl, "service", "status", "--system"])
    assert service.returncode == 0, service.stdout + service.stderr
    assert f"account {ACCOUNT}: present" in service.stdout
    status = _run([installed.aegisctl, "secrets", "status", "--system", "--json"])
    doc = json.loads(status.stdout)
    assert doc["backend"] == "file"
    assert doc["secrets"]["auth0_client_secret"]["present"] is True
    assert all(v not in status.stdout for v in installed.tenant.secrets_env_vars().values())


def test_rerunning_install_changes_no_account_and_keeps_the_secrets(installed: Stack) -> None:
    before = {f.name: f.read_bytes() for f in SECRETS.iterdir()}
    again = _run(
        [
            installed.aegisctl,
            "service",
            "install",
            "--system",
            "--no-start",
            "--person",
            installed.person.name,
            "--config",
            str(installed.source_config),
        ]
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert not [ln for ln in again.stdout.splitlines() if ln.startswith("ran: ")]
    assert {f.name: f.read_bytes() for f in SECRETS.iterdir()} == before
    members = grp.getgrnam(GROUP).gr_mem
    assert installed.person.name in members and ACCOUNT in members


def test_installed_units_verify(installed: Stack) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found (apt-get install systemd)")
    result = _run(["systemd-analyze", "verify", *map(str, UNITS)])
    assert result.returncode == 0 and result.stderr == "", result.stderr


def _socket_is_group_accessible() -> bool:
    st_dir, st_sock = os.stat(RUNTIME), os.stat(SOCKET)

    clients = grp.getgrnam(GROUP).gr_gid
    dir_ok = st_dir.st_mode & 0o050 == 0o050 and st_dir.st_gid == clients
    return dir_ok and st_sock.st_mode & 0o060 == 0o060 and st_sock.st_gid == clients


def test_the_person_runs_allowed_actions_with_approval(installed: Stack) -> None:
    if not _socket_is_group_accessible():
        pytest.skip(
            "aegisd made /run/aegis or its socket private to itself: the group-accessible "
            "socket layout (aegisd/daemon/server.py, issue 12 item 1) is not in this tree yet"
        )
    script = installed.work / "person_client.py"
    shutil.copy(HERE / "person_client.py", script)
    result = installed.person.run([installed.python, str(script), str(SOCKET)], timeout=120)
    assert result.returncode == 0, result.stderr + installed.daemon_log.read_text()  # type: ignore[union-attr]
    out = json.loads(result.stdout)
    assert out["read"] == {"ok": True, "status": 200}
    assert out["delete"]["ok"] is True  # a CIBA approval (auto-approved by the dev tenant)
    # exe rules cannot match across uids without --verify-exe; uid+argv rules do
    assert out["token"] == {"ok": False, "code": "caller_not_allowed"}
    # argv rules still tell programs apart: the same code under another name matches no rule
    other = installed.work / "other_client.py"
    shutil.copy(HERE / "person_client.py", other)
    refused = json.loads(installed.person.run([installed.python, str(other), str(SOCKET)]).stdout)
    assert refused["read"] == {"ok": False, "code": "peer_rejected"}


def test_the_person_cannot_reach_secrets_state_config_or_the_process(installed: Stack) -> None:
    pid, _, _ = _daemon_peer()
    secret_files = [str(f) for f in SECRETS.iterdir()]
    audit = STATE / "audit.jsonl"
    paths = {
        "read": [*secret_files, str(CONFIG), str(audit)],
        "write": [str(CONFIG), str(audit), *secret_files],
        "create": [str(STATE / "policy.toml"), str(SECRETS / "auth0_private_key"), "/etc/aegis/x"],
        "state": str(STATE),
    }
    script = installed.work / "person_probe.py"
    shutil.copy(HERE / "person_probe.py", script)
    result = installed.person.run(
        [installed.python, str(script), str(pid), json.dumps(paths)], timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out.pop("kill -0") == "EPERM" and out.pop("kill -HUP") == "EPERM"
    assert out.pop("ptrace") == "EPERM"
    for key in ("environ", "mem"):
        assert out.pop(key) == "EACCES", key
    assert out, "no file was probed"
    assert {k: v for k, v in out.items() if v != "EACCES"} == {}
    assert _daemon_peer()[0] == pid  # still the same daemon, still serving


def test_with_verify_exe_exe_rules_match_across_uids(installed: Stack) -> None:
    if not _socket_is_group_accessible():
        pytest.skip("needs the group-accessible socket layout (see the test above)")
    _stop_daemon(installed)
    again = _run(
        [
            installed.aegisctl,
            "service",
            "install",
            "--system",
            "--no-start",
            "--verify-exe",
            "--person",
            installed.person.name,
            "--config",
            str(installed.source_config),
        ]
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "CapabilityBoundingSet=CAP_SYS_PTRACE" in UNITS[0].read_text()
    assert not [line for line in again.stdout.splitlines() if line.startswith("ran: useradd")]
    # what the unit grants, given by hand: CAP_SYS_PTRACE in the bounding and ambient sets
    caps = [
        "--inh-caps=+sys_ptrace",
        "--ambient-caps=+sys_ptrace",
        "--bounding-set=-all,+sys_ptrace",
    ]
    setpriv = ["setpriv", f"--reuid={ACCOUNT}", f"--regid={ACCOUNT}", "--init-groups", *caps, "--"]
    _start_daemon(installed, setpriv)
    other = installed.work / "other_client.py"
    shutil.copy(HERE / "person_client.py", other)
    result = installed.person.run([installed.python, str(other), str(SOCKET)], timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # no uid/argv rule fits this script; the exe rule now can, and allows only demo.token
    assert out["token"] == {"ok": True, "status": None}
    assert out["read"] == {"ok": False, "code": "caller_not_allowed"}


def test_secrets_delete_system_and_the_person_cannot_use_system_secrets(installed: Stack) -> None:
    as_person = installed.person.run(
        [installed.aegisctl, "secrets", "set", "--system", "auth0_client_secret"],
        input="attacker-value\n",
    )
    assert as_person.returncode != 0 and "sudo" in as_person.stderr
    deleted = _run(
        [installed.aegisctl, "secrets", "delete", "--system", "management_client_secret"]
    )
    assert deleted.returncode == 0, deleted.stderr
    assert not (SECRETS / "management_client_secret").exists()
    again = _run([installed.aegisctl, "secrets", "delete", "--system", "management_client_secret"])
    assert again.returncode == 0 and "nothing to delete" in again.stdout
    status = json.loads(
        _run([installed.aegisctl, "secrets", "status", "--system", "--json"]).stdout
    )
    assert status["secrets"]["management_client_secret"]["present"] is False
    assert status["secrets"]["auth0_client_secret"]["present"] is True


def test_the_person_changes_the_policy_only_through_an_approved_proposal(
    installed: Stack,
) -> None:
    """Issue 12.4 in the real layout: show, then propose (the dev tenant approves it), as the
    person; the active policy lands in /var/lib/aegis, which the person still cannot write."""
    if not _socket_is_group_accessible():
        pytest.skip("the group-accessible socket layout is not in this tree yet")
    ctl = [installed.aegisctl, "--socket", str(SOCKET)]
    shown = installed.person.run([*ctl, "policy", "show"])
    assert shown.returncode == 0, shown.stderr
    proposal = installed.work / "proposal.toml"
    proposal.write_text(shown.stdout + '\n[actions."demo.extra"]\napproval = "deny"\n')
    proposal.chmod(0o644)
    done = installed.person.run([*ctl, "policy", "propose", str(proposal)], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "approve on your phone: 'Policy: 1 added #" in done.stderr
    assert "applied: 1 added" in done.stdout
    active = STATE / "policy.toml"
    st = os.lstat(active)
    assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam(ACCOUNT).pw_uid, 0o600)
    assert '[actions."demo.extra"]' in active.read_text()
    again = installed.person.run([*ctl, "policy", "show"])
    assert '[actions."demo.extra"]' in again.stdout
    # the person may propose, not write: the file and its directory stay the account's
    write = installed.person.run(["/bin/sh", "-c", f"echo x >> {active}"])
    assert write.returncode != 0


def test_uninstall_purge_removes_everything(installed: Stack) -> None:
    if installed.daemon is not None and installed.daemon.poll() is None:
        busy = _run([installed.aegisctl, "service", "uninstall", "--system", "--purge"])
        assert busy.returncode == 1 and "still running as aegis" in busy.stderr
        assert CONFIG.exists()
    _stop_daemon(installed)
    result = _run([installed.aegisctl, "service", "uninstall", "--system", "--purge"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert _present() == []
    gone = _run([installed.aegisctl, "service", "status", "--system"])
    assert gone.returncode == 1 and f"account {ACCOUNT}: missing" in gone.stdout
    groups = subprocess.run(["id", "-nG", installed.person.name], capture_output=True, text=True)
    assert GROUP not in groups.stdout.split()

"""Issue 13.10: one aegisd per audit log, even when the first one's socket was deleted.

Real ``aegisd`` processes: the second daemon on the same audit log exits ``already_running``
(18) naming the first one's pid and socket, touches neither the socket path nor the log, and
the first one keeps writing an intact chain; ``doctor`` sees a running daemon whose socket is
gone and says how to restart it. The lock's own rules are unit-tested at the end.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from aegisd.daemon import instance_lock
from aegisd.daemon.audit import verify_files
from aegisd.errors import AlreadyRunning, UnsafeFile
from tests.corekit import (
    DaemonProcess,
    Files,
    audit_records,
    run_ctl,
    status_roundtrip,
    wait_for_record,
)

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


def refused_as_running(spawn_daemon: Spawn, files: Files) -> str:
    return spawn_daemon(files, start=False).refused(AlreadyRunning.exit_code)


def test_a_second_daemon_is_refused_when_the_first_ones_socket_was_deleted(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    first = spawn_daemon(files)
    os.unlink(files.socket)  # what let a second daemon start and break the chain for good
    second = write_config(name="second.toml", socket_path=files.socket, audit_path=files.audit)
    err = refused_as_running(spawn_daemon, second)
    assert (
        f"another aegisd (pid {first.pid}) already writes the audit log {files.audit} and "
        f"listens on {files.socket}; its socket {files.socket} is gone" in err
    )
    assert f"kill -TERM {first.pid}" in err
    assert not os.path.lexists(files.socket)  # the refused one bound nothing
    # the first one still runs and still writes its log: SIGHUP reloads and audits
    first.send_signal(signal.SIGHUP)
    wait_for_record(files.audit, lambda r: r["event"] == "reloaded")
    assert first.stop(signal.SIGTERM) == 0
    events = [r["event"] for r in audit_records(files.audit)]
    assert events.count("start") == 1 and events[-1] == "stop"
    result = verify_files(files.audit)
    assert result.ok, result.problems


def test_a_second_daemon_with_its_own_socket_is_refused_and_the_first_serves(
    daemon_proc: DaemonProcess, write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    files = daemon_proc.files
    second = write_config(
        name="second.toml", socket_path=aeg_root / "other" / "s.sock", audit_path=files.audit
    )
    err = refused_as_running(spawn_daemon, second)
    assert f"another aegisd (pid {daemon_proc.pid}) already writes the audit log" in err
    assert not (aeg_root / "other" / "s.sock").exists()
    assert status_roundtrip(files.socket).pid == daemon_proc.pid
    assert verify_files(files.audit).ok


def test_the_lock_is_released_when_the_daemon_dies(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    first = spawn_daemon(files)
    lock = instance_lock.lock_path(files.audit)
    st = os.lstat(lock)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert f"pid={first.pid}\n" in lock.read_text()
    first.stop(signal.SIGKILL)  # no clean-up ran: the kernel drops the flock
    second = spawn_daemon(files)
    assert status_roundtrip(files.socket).pid == second.pid
    assert f"pid={second.pid}\n" in lock.read_text()


def test_doctor_sees_a_running_daemon_whose_socket_is_gone(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    d = spawn_daemon(files)
    os.unlink(files.socket)
    done = run_ctl(files, "status")  # not "not running": it runs, unreachable
    assert done.returncode == 3
    assert f"aegisd is running (pid {d.pid}) but its socket {files.socket} is gone" in (done.stderr)
    done = run_ctl(files, "status", "--json")
    assert done.returncode == 3 and f"kill -TERM {d.pid}" in done.stdout
    done = run_ctl(files, "doctor", "--json", "--timeout", "1", timeout=60)
    assert done.returncode == 1
    check = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["daemon"]
    assert check["verdict"] == "fail"
    assert check["detail"] == (
        f"aegisd is running (pid {d.pid}) but its socket {files.socket} is gone: no client "
        "can reach it"
    )
    assert f"kill -TERM {d.pid}" in check["fix"]
    subprocess.run(["kill", "-TERM", str(d.pid)], check=True, timeout=10)  # the fix
    assert d.wait_exit() == 0
    again = spawn_daemon(files)
    assert status_roundtrip(files.socket).pid == again.pid
    # the probe took nothing: a daemon started right after doctor still gets the lock
    done = run_ctl(files, "doctor", "--json", "--timeout", "1", timeout=60)
    check = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["daemon"]
    assert check["verdict"] == "ok", check


# ---- the lock's own rules ------------------------------------------------------------------


def test_probe_states(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    assert instance_lock.probe(audit).state == "absent"

    async def hold() -> None:
        lock = await instance_lock.take(audit, tmp_path / "s.sock")
        found = instance_lock.probe(audit)
        assert (found.state, found.pid, found.socket) == (
            "held",
            os.getpid(),
            str(tmp_path / "s.sock"),
        )
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            await instance_lock.take(audit, tmp_path / "t.sock")
        lock.release()
        lock.release()  # idempotent

    trio.run(hold)
    assert instance_lock.probe(audit).state == "free"


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    target = tmp_path / "elsewhere"
    instance_lock.lock_path(audit).symlink_to(target)
    with pytest.raises(UnsafeFile, match="lock file is a symlink"):
        trio.run(instance_lock.take, audit, tmp_path / "s.sock")
    assert not target.exists()

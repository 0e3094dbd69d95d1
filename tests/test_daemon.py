"""The daemon as users meet it: a real ``aegisd`` process on a temporary config and socket.

Covers the socket's safety (modes, refusals, stale sockets, activation), readiness
(sd_notify), status, signals (SIGTERM, SIGINT, SIGHUP) and the in-process start protocol.
Subprocess tests use blocking sockets with timeouts and the fixtures' cleanup; trio tests use
``fail_after``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
import trio

from aegisd import wire
from aegisd.client import AegisClient
from aegisd.config import load_config
from aegisd.daemon.audit import verify_files
from aegisd.daemon.daemon import Daemon
from tests.corekit import (
    AEGISD,
    CLIENT_EXE,
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    demo_action,
    run_ctl,
    status_roundtrip,
    wait_for,
    wait_for_record,
)
from tests.corekit import write_config as rewrite

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


def list_actions(client: RawClient) -> list[str]:
    answer = client.ask(wire.ListActions(id=client.next_id()))
    assert isinstance(answer, wire.Actions), answer
    return [a.name for a in answer.actions]


# ---- the socket and its directory -----------------------------------------------------------


def test_socket_is_0600_and_its_directory_0700(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    st = os.lstat(files.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    dst = os.lstat(files.socket.parent)
    assert stat.S_IMODE(dst.st_mode) == 0o700
    assert dst.st_uid == os.getuid()


def refused(spawn_daemon: Spawn, files: Files, code: int = 78) -> str:
    """Start a daemon that must refuse (exit ``code``); return its stderr."""
    return spawn_daemon(files, start=False).refused(code)


def test_refuses_a_directory_owned_by_someone_else(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    files.socket.parent.mkdir(mode=0o700)
    os.chown(files.socket.parent, 54321, -1)  # a throwaway uid; no account needed
    err = refused(spawn_daemon, files)
    assert f"aegisd: {files.socket.parent}: socket directory is owned by uid 54321" in err
    assert not files.socket.exists()


def test_refuses_a_group_writable_directory(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    files.socket.parent.mkdir()
    files.socket.parent.chmod(0o770)
    err = refused(spawn_daemon, files)
    assert "socket directory is group- or world-writable (mode 770)" in err
    assert stat.S_IMODE(os.lstat(files.socket.parent).st_mode) == 0o770  # left as it was


def test_refuses_an_existing_readable_directory_and_leaves_it_alone(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    # issue 16.9: the daemon used to chmod it to 0700 (the cwd for socket = "rel.sock")
    files = write_config()
    files.socket.parent.mkdir()
    files.socket.parent.chmod(0o755)
    err = refused(spawn_daemon, files)
    assert "socket directory has mode 755, must be 700" in err
    assert f"chmod 700 {files.socket.parent}" in err
    assert stat.S_IMODE(os.lstat(files.socket.parent).st_mode) == 0o755


def test_refuses_a_symlinked_directory(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    real = files.root / "elsewhere"
    real.mkdir(mode=0o700)
    files.socket.parent.symlink_to(real)
    err = refused(spawn_daemon, files)
    assert "socket directory is a symlink; refusing to use it" in err
    assert list(real.iterdir()) == []


def test_refuses_to_replace_a_file_that_is_not_a_socket(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    files.socket.parent.mkdir(mode=0o700)
    files.socket.write_text("precious")
    err = refused(spawn_daemon, files)
    assert "exists and is not a socket; refusing to replace it" in err
    assert files.socket.read_text() == "precious"


def test_refuses_a_socket_path_that_is_too_long(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    long_path = aeg_root / ("d" * 100) / "aegisd.sock"
    files = write_config(socket_path=long_path)
    err = refused(spawn_daemon, files)
    assert f"socket path is {len(os.fsencode(long_path))} bytes, the limit is 107" in err
    assert "set [daemon] socket to a shorter path" in err


def test_refuses_to_start_beside_a_live_daemon(
    daemon_proc: DaemonProcess, write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    first = daemon_proc.files
    second = write_config(
        socket_path=first.socket, audit_path=aeg_root / "second.jsonl", name="second.toml"
    )
    err = refused(spawn_daemon, second, code=18)  # already_running
    assert f"{first.socket}: another aegisd is already running there" in err
    # the running daemon is untouched and still serves
    assert status_roundtrip(first.socket).pid == daemon_proc.pid
    daemon_proc.assert_no_crash()  # the probe connection is not a crash


def test_stale_socket_of_a_killed_daemon_is_replaced(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    first = spawn_daemon(files)
    first.stop(signal.SIGKILL)
    assert stat.S_ISSOCK(os.lstat(files.socket).st_mode)  # left behind by kill -9
    with pytest.raises(ConnectionRefusedError):
        RawClient(files.socket)
    second = spawn_daemon(files)
    assert status_roundtrip(files.socket).pid == second.pid
    assert [r["event"] for r in audit_records(files.audit)].count("start") == 2
    assert verify_files(files.audit).ok


# ---- readiness -----------------------------------------------------------------------------


def test_sd_notify_ready_status_and_stopping(daemon_proc: DaemonProcess) -> None:
    ready = next(n for n in daemon_proc.notifications if "READY=1" in n)
    assert ready.split("\n") == ["READY=1", f"STATUS=listening on {daemon_proc.files.socket}"]
    # READY comes after the socket listens: a connection now succeeds at once
    assert status_roundtrip(daemon_proc.files.socket).pid == daemon_proc.pid
    daemon_proc.send_signal(signal.SIGTERM)
    assert daemon_proc.read_notifications(5.0) == ["STOPPING=1"]
    assert daemon_proc.wait_exit() == 0


def test_sd_notify_to_an_abstract_socket(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    name = f"aegis-test-{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(15)
    with receiver:
        d = spawn_daemon(write_config(), start=False, env={"NOTIFY_SOCKET": "@" + name})
        assert receiver.recv(4096).startswith(b"READY=1\n")
        assert status_roundtrip(d.files.socket).pid == d.pid


# ---- status --------------------------------------------------------------------------------


def test_status_json_reports_daemon_peers_and_audit(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    with RawClient(files.socket) as held:
        held.hello()
        done = run_ctl(files, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["daemon_version"] == version("aegis-broker")
    assert report["pid"] == daemon_proc.pid
    assert 0 <= report["uptime"] < 60
    assert report["socket"] == str(files.socket)
    assert report["config"] == str(files.config)
    assert report["pending"] == 0
    assert report["audit_log"] == str(files.audit)
    assert report["audit_ok"] is True
    assert report["actions"] == 1 and report["callers"] == 1
    me = {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "exe": CLIENT_EXE,
        "caller": "tests",
        "exe_verified": True,
    }
    assert me in report["peers"]  # the held connection
    assert len(report["peers"]) == 2  # and aegisctl itself
    assert all(p["exe"] == CLIENT_EXE and p["caller"] == "tests" for p in report["peers"])


# ---- signals -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_0_removes_the_socket_and_audits(
    daemon_proc: DaemonProcess, signum: int
) -> None:
    files = daemon_proc.files
    status_roundtrip(files.socket)
    assert daemon_proc.stop(signum) == 0
    assert not files.socket.exists()
    recs = audit_records(files.audit)
    assert recs[-1]["event"] == "stop"
    assert recs[-1]["pid"] == daemon_proc.pid
    assert verify_files(files.audit).ok
    daemon_proc.assert_no_crash()


def test_sigterm_answers_in_flight_requests_with_shutting_down(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts, never answers
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(8)
    upstream.settimeout(10)
    port = upstream.getsockname()[1]
    with upstream:
        files = write_config(
            actions={"demo.read": demo_action(f"http://127.0.0.1:{port}/repos/{{repo}}")}
        )
        d = spawn_daemon(files)
        with RawClient(files.socket, timeout=15) as c:
            c.hello()
            c.send(wire.Proxy(id=41, action="demo.read", params={"repo": "x"}))
            conn, _ = upstream.accept()  # the daemon's request is now in flight
            with conn:
                d.send_signal(signal.SIGTERM)
                answer = c.recv()
        assert answer == wire.Error(id=41, code="shutting_down", message="aegisd is shutting down")
        assert d.wait_exit() == 0
    events = [r["event"] for r in audit_records(files.audit)]
    assert events[-1] == "stop"
    assert "interrupted" in events  # the request had reached the upstream


def test_sighup_reload_makes_a_new_action_visible(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    with RawClient(files.socket) as c:
        c.hello()
        assert list_actions(c) == ["demo.read"]
        rewrite(files.root, actions={"demo.read": demo_action(), "demo.extra": demo_action()})
        daemon_proc.send_signal(signal.SIGHUP)
        wait_for(lambda: list_actions(c) == ["demo.extra", "demo.read"], what="reloaded policy")
    rec = wait_for_record(files.audit, lambda r: r["event"] == "reloaded")
    assert rec["actions"] == 2
    assert daemon_proc.proc is not None and daemon_proc.proc.poll() is None


def test_sighup_with_an_invalid_file_keeps_the_old_policy(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    good = files.config.read_text()
    files.config.write_text(good.replace("^[a-z0-9-]{1,20}$", "^[a-z"))
    daemon_proc.send_signal(signal.SIGHUP)
    rec = wait_for_record(files.audit, lambda r: r["event"] == "reload_failed")
    (problem,) = rec["problems"]  # type: ignore[misc]
    assert problem.startswith(f"{files.config}:13: key actions.demo.read.params.repo")
    with RawClient(files.socket) as c:
        c.hello()
        assert list_actions(c) == ["demo.read"]  # old policy still in force
    assert "reload failed, keeping the current policy" in daemon_proc.stderr()
    # fixing the file and reloading again works: the daemon did not get stuck
    files.config.write_text(good)
    daemon_proc.send_signal(signal.SIGHUP)
    wait_for_record(files.audit, lambda r: r["event"] == "reloaded")
    assert daemon_proc.stop() == 0


# ---- socket activation -----------------------------------------------------------------------

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not found")


def activated(files: Files, spawn_daemon: Spawn) -> DaemonProcess:
    files.socket.parent.mkdir(mode=0o700)
    # it passes no environment on unless asked (-E), like systemd itself
    argv = [str(ACTIVATE), "-l", str(files.socket), "-E", "NOTIFY_SOCKET"]
    argv += [str(AEGISD), "--config", str(files.config)]
    d = spawn_daemon(files, start=False, argv=argv)
    # systemd-socket-activate binds, listens, then waits for the first connection before
    # exec'ing; between bind and listen a connect is refused, so wait for the listening state
    wait_for(lambda: _listening(files.socket), timeout=10, what="systemd-socket-activate")
    return d


def _listening(path: Path) -> bool:
    """/proc/net/unix lists the socket with __SO_ACCEPTCON (flags 00010000) once it listens."""
    with open("/proc/net/unix") as table:
        return any(
            line.split()[-1] == str(path) and line.split()[3] == "00010000"
            for line in table
            if len(line.split()) >= 8
        )


@needs_activate
def test_socket_activation_serves_and_leaves_the_socket(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    d = activated(files, spawn_daemon)
    files.socket.chmod(0o600)  # what SocketMode=0600 does in the .socket unit
    with RawClient(files.socket, timeout=15) as first:  # this connection starts the daemon
        assert first.hello().peer.caller == "tests"
        d.wait_ready()
        done = run_ctl(files, "status", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["socket"] == str(files.socket)
    start = next(r for r in audit_records(files.audit) if r["event"] == "start")
    assert start["activated"] == "systemd"
    assert d.stop() == 0
    assert stat.S_ISSOCK(os.lstat(files.socket).st_mode)  # systemd's socket: never unlinked


@needs_activate
def test_socket_activation_refuses_a_socket_others_could_open(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    d = activated(files, spawn_daemon)  # systemd-socket-activate creates it 0644
    with RawClient(files.socket, timeout=15) as trigger:
        trigger.send(wire.Hello())
        assert d.wait_exit() == 78
    assert "must be 600 (for systemd set SocketMode=0600)" in d.stderr()


# ---- in process: the start protocol ----------------------------------------------------------


async def test_serve_start_protocol_returns_the_listening_path(
    write_config: WriteConfig,
) -> None:
    files = write_config()
    d = Daemon(load_config(files.config))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            path = await nursery.start(d.serve)
            assert path == files.socket
            async with AegisClient(path) as client:
                assert client.peer == wire.PeerInfo(
                    uid=os.getuid(), pid=os.getpid(), exe=CLIENT_EXE, caller="tests"
                )
                (action,) = await client.list_actions()
                assert action.name == "demo.read" and action.approval == "none"
                assert (await client.status()).socket == str(files.socket)
            await d.stop()
        # serve() has returned: the socket is gone and the stop is audited
    assert not files.socket.exists()
    assert audit_records(files.audit)[-1]["event"] == "stop"


async def test_in_process_reload_swaps_or_keeps_the_policy(daemon: Daemon) -> None:
    source = Path(daemon.config.source)
    with trio.fail_after(10):
        source.write_text(source.read_text().replace("[a-z0-9-]", "[a-z"))
        assert await daemon.reload() is False
        assert list(daemon.policy.actions) == ["demo.read"]
        rewrite(source.parent, actions={"demo.read": demo_action(), "demo.two": demo_action()})
        assert await daemon.reload() is True
        async with AegisClient(daemon.config.socket_path()) as client:
            assert [a.name for a in await client.list_actions()] == ["demo.read", "demo.two"]


def test_aegisd_version_flag() -> None:
    done = subprocess.run([str(AEGISD), "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert version("aegis-broker") in done.stdout

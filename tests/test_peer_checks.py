"""Who may talk to the daemon: the uid barrier, then ``[[callers]]`` rules.

Every client here is its own process (``RAW_CLIENT_SCRIPT``), so the daemon sees a real pid,
executable, command line and uid through ``SO_PEERCRED`` and ``/proc``.

Another uid: the test creates a throwaway system user (``aegis-test-other``) and runs the
client under ``setpriv``. Normally that user cannot even reach the socket: the directory is
0700 and the socket 0600 (the first barrier, checked below). To test the daemon's own check
(the second barrier), the directory and socket are loosened *after* the daemon started — it
verifies them only at bind time — so the kernel lets the connection through and the daemon
must refuse it by its SO_PEERCRED uid. The client uses /usr/bin/python3 because the venv's
interpreter lives under /root, which that user cannot read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aegisd import wire
from tests.corekit import (
    CLIENT_EXE,
    SYSTEM_PYTHON,
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    run_raw_client,
    short_root,
    status_roundtrip,
)
from tests.corekit import write_config as write_config_at

OTHER_USER = "aegis-test-other"
REJECTED = wire.Error(code="peer_rejected", message="this process is not allowed to use aegisd")

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


@pytest.fixture(scope="module")
def other_user() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and to drop privileges")
    if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs setpriv and /usr/bin/python3")
    try:
        pw = pwd.getpwnam(OTHER_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("needs useradd to create a throwaway user")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", OTHER_USER], check=True, timeout=30
        )
        pw = pwd.getpwnam(OTHER_USER)
    return pw.pw_uid, pw.pw_gid


def as_user(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def loosen_for_other_uids(files: Files) -> None:
    """Test-only: open the filesystem barrier so the daemon's uid check is what decides."""
    files.root.chmod(0o711)
    files.socket.parent.chmod(0o711)
    files.socket.chmod(0o666)


HELLO = wire.Hello(client="peer-test")


# ---- another uid --------------------------------------------------------------------------


def test_other_uid_cannot_reach_the_private_socket(
    daemon_proc: DaemonProcess, other_user: tuple[int, int]
) -> None:
    files = daemon_proc.files
    files.root.chmod(0o711)  # only the daemon's own 0700 directory stands in the way
    run = run_raw_client(
        files.socket, [HELLO], want=1, python=SYSTEM_PYTHON, prefix=as_user(*other_user)
    )
    assert run.outcome == "CONNECT-ERROR"
    assert run.errno == errno.EACCES


def test_other_uid_is_rejected_and_audited(
    daemon_proc: DaemonProcess, other_user: tuple[int, int]
) -> None:
    files = daemon_proc.files
    loosen_for_other_uids(files)
    run = run_raw_client(
        files.socket,
        [HELLO, wire.Status(id=1)],
        want=2,
        python=SYSTEM_PYTHON,
        prefix=as_user(*other_user),
    )
    assert run.closed  # refused, then the connection closed
    assert run.messages == [REJECTED]  # a reason that tells an attacker nothing
    (rec,) = [r for r in audit_records(files.audit) if r["event"] == "peer_rejected"]
    assert rec["uid"] == other_user[0]
    assert rec["exe"] == os.path.realpath(SYSTEM_PYTHON)
    assert rec["reason"] == "uid not allowed"
    # the operator's log says who it was (issue 16); the peer itself learned nothing
    assert f"rejected: uid {other_user[0]} is not allowed (exe " in daemon_proc.stderr()
    assert status_roundtrip(files.socket).pid == daemon_proc.pid  # others are still served
    daemon_proc.assert_no_crash()


def test_uid_listed_in_allowed_uids_is_welcomed(
    write_config: WriteConfig, spawn_daemon: Spawn, other_user: tuple[int, int]
) -> None:
    uid, _ = other_user
    daemon = spawn_daemon(write_config(allowed_uids=[uid]))
    files = daemon.files
    loosen_for_other_uids(files)
    with RawClient(files.socket) as own:  # a connection of the daemon's uid stays open
        own.hello()
        run = run_raw_client(
            files.socket,
            [HELLO, wire.Status(id=1), wire.ListActions(id=2)],
            want=3,
            python=SYSTEM_PYTHON,
            prefix=as_user(*other_user),
        )
    assert run.outcome == "OK"
    welcome, report, actions = run.messages
    assert isinstance(welcome, wire.Welcome)
    assert welcome.peer.uid == uid and welcome.peer.caller is None
    assert isinstance(report, wire.StatusReport) and report.pid == daemon.pid
    # Status lists the connected processes of the asker's own uid only (not an operator)
    assert report.peers and {p.uid for p in report.peers} == {uid}
    # the uid may inspect, but /usr/bin/python3 matches no caller rule
    assert isinstance(actions, wire.Error) and (actions.id, actions.code) == (2, REJECTED.code)
    # issue 16: the rejected caller learns which rule missed and what aegisd saw
    assert actions.message.startswith("no [[callers]] rule matches this process (aegisd saw exe ")
    assert "exe does not match" in actions.message
    connects = [r for r in audit_records(files.audit) if r["event"] == "connect"]
    assert uid in {r["uid"] for r in connects}


# ---- caller rules -------------------------------------------------------------------------


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def ruled() -> Iterator[DaemonProcess]:
    """One daemon whose rules a client selects by a marker in its command line."""
    rules = [
        {
            "name": "wrong-pin",
            "exe": [CLIENT_EXE],
            "sha256": ["0" * 64],
            "argv": ["*--as-wrongpin*"],
            "actions": ["demo.*"],
        },
        {
            "name": "pinned",
            "exe": [CLIENT_EXE],
            "sha256": [sha256_of(CLIENT_EXE)],  # computed here, as an operator would
            "argv": ["*--as-pinned*"],
            "actions": ["demo.*"],
        },
    ]
    with short_root() as root:
        d = DaemonProcess(write_config_at(root, callers=rules))
        try:
            yield d.start()
        finally:
            d.cleanup()


ASK_ALL = [HELLO, wire.Status(id=1), wire.ListActions(id=2)]


def test_matching_exe_argv_and_pin_is_welcomed_with_its_caller_name(ruled: DaemonProcess) -> None:
    run = run_raw_client(ruled.files.socket, ASK_ALL, want=3, marker=["--as-pinned"])
    assert run.outcome == "OK"
    welcome, report, actions = run.messages
    assert isinstance(welcome, wire.Welcome)
    assert welcome.peer.caller == "pinned" and welcome.peer.exe == CLIENT_EXE
    assert isinstance(report, wire.StatusReport)
    mine = next(p for p in report.peers if p.pid == welcome.peer.pid)
    assert mine.caller == "pinned"
    assert isinstance(actions, wire.Actions)
    assert [a.name for a in actions.actions] == ["demo.read"]


@pytest.mark.parametrize(
    ("python", "marker"),
    [
        (CLIENT_EXE, ["--as-wrongpin"]),  # right exe and argv, wrong sha256 pin
        (CLIENT_EXE, ["--as-nobody"]),  # right exe and pin, argv matches no rule
        (SYSTEM_PYTHON, ["--as-pinned"]),  # right argv, another executable
    ],
    ids=["wrong-pin", "wrong-argv", "wrong-exe"],
)
def test_peer_matching_no_rule_may_inspect_but_not_act(
    ruled: DaemonProcess, python: str, marker: list[str]
) -> None:
    if not os.access(python, os.X_OK):
        pytest.skip(f"{python} not available")
    frames = [*ASK_ALL, wire.Authorize(id=3, action="demo.read", params={"repo": "x"})]
    run = run_raw_client(ruled.files.socket, frames, want=4, python=python, marker=marker)
    assert run.outcome == "OK"
    welcome, report, *errors = run.messages
    assert isinstance(welcome, wire.Welcome) and welcome.peer.caller is None
    assert isinstance(report, wire.StatusReport)  # Status is open to any peer of an allowed uid
    errors.sort(key=lambda e: getattr(e, "id", 0))
    assert [(e.id, e.code) for e in errors if isinstance(e, wire.Error)] == [
        (2, "peer_rejected"),
        (3, "peer_rejected"),
    ]
    # issue 16: which condition of each rule failed, and what aegisd saw
    why = {"--as-wrongpin": "sha256 matches no pin", "--as-nobody": "argv does not match"}
    for e in errors:
        assert isinstance(e, wire.Error)
        assert f"aegisd saw exe {os.path.realpath(python)} and argv " in e.message
        assert why.get(marker[0], "exe does not match") in e.message
    pid = welcome.peer.pid
    refused = [
        r
        for r in audit_records(ruled.files.audit)
        if r["event"] == "refused" and r["pid"] == pid and r["code"] == "peer_rejected"
    ]
    assert len(refused) == 2
    ruled.assert_no_crash()


def test_argv_rule_sees_the_real_command_line(ruled: DaemonProcess) -> None:
    run = run_raw_client(ruled.files.socket, [HELLO], want=1, marker=["x", "--as-pinned", "y"])
    (welcome,) = run.messages
    assert isinstance(welcome, wire.Welcome) and welcome.peer.caller == "pinned"


def test_status_lists_connected_peers_with_their_caller(ruled: DaemonProcess) -> None:
    # a pinned client holds its connection while another asks for status
    holder = subprocess.Popen(
        [
            CLIENT_EXE,
            "-c",
            "import socket,struct,sys,time;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
            "s.sendall(bytes.fromhex(sys.argv[2]));s.recv(65536);print('in',flush=True);"
            "sys.stdin.read()",
            str(ruled.files.socket),
            wire.encode(HELLO).hex(),
            "--as-pinned",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "in\n"
        report = status_roundtrip(ruled.files.socket)
        entry = next(p for p in report.peers if p.pid == holder.pid)
        assert entry == wire.PeerInfo(
            uid=os.getuid(), pid=holder.pid, exe=CLIENT_EXE, caller="pinned"
        )
    finally:
        holder.communicate(timeout=10)


def test_rule_exe_may_name_a_symlink_to_the_interpreter(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    link = aeg_root / "python-link"
    link.symlink_to(CLIENT_EXE)
    rules = [{"name": "linked", "exe": [str(link)], "actions": ["demo.*"]}]
    d = spawn_daemon(write_config(callers=rules))
    (welcome,) = run_raw_client(d.files.socket, [HELLO], want=1).messages
    assert isinstance(welcome, wire.Welcome) and welcome.peer.caller == "linked"

"""Issue 12.7: clients find the socket and refuse a server that is not aegisd's.

A throwaway user runs a small fake "daemon" (stdlib only, /usr/bin/python3) that would answer
Hello with Welcome and hand out a token. The SDK, the shim's client and aegisctl must refuse
it right after ``connect``: the fake counts the bytes it received, and it must be zero.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from aegisd import locate, wire
from aegisd.accounts import DAEMON_USER_ENV
from aegisd.client import AegisClient, DaemonUntrusted
from tests.corekit import AEGISCTL, SYSTEM_PYTHON, child_env, short_root, wait_for
from tests.crossuid.foreign import Account, throwaway_user

# argv: socket path, hex of what to send after accepting. Prints the byte count received.
FAKE_SERVER = r"""
import os, socket, sys
path, reply = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
s.listen(4)
conn, _ = s.accept()
conn.settimeout(5)
got = b""
try:
    conn.sendall(reply)
    while data := conn.recv(65536):
        got += data
except OSError:
    pass
print(len(got), flush=True)
"""

TOKEN_REPLY = wire.encode(
    wire.Welcome(protocol=wire.PROTOCOL, daemon_version="9", peer=wire.PeerInfo(uid=0, pid=1))
) + wire.encode(wire.Granted(id=1, grant=wire.Grant(access_token="attacker-token")))


@pytest.fixture
def planter() -> Iterator[Account]:
    with throwaway_user("x") as account:
        yield account


def plant(directory: Path, prefix: list[str]) -> tuple[subprocess.Popen[str], Path]:
    path = directory / "aegisd.sock"
    proc = subprocess.Popen(
        [*prefix, SYSTEM_PYTHON, "-c", FAKE_SERVER, str(path), TOKEN_REPLY.hex()],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    wait_for(path.exists, what="the planted socket")
    return proc, path


def received(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=15)
    return int(out.strip())


async def sdk_connect(path: Path) -> None:
    async with AegisClient(path) as c:
        await c.authorize("demo.token")


def test_sdk_refuses_a_socket_planted_by_another_user(planter: Account) -> None:
    with short_root() as root:
        os.chown(root, planter.uid, planter.gid)
        proc, path = plant(root, planter.prefix())
        with pytest.raises(DaemonUntrusted, match=f"runs as uid {planter.uid}"):
            trio.run(sdk_connect, path)
        assert received(proc) == 0  # not even Hello went out


def test_aegisctl_refuses_it_too(planter: Account) -> None:
    with short_root() as root:
        os.chown(root, planter.uid, planter.gid)
        proc, path = plant(root, planter.prefix())
        done = subprocess.run(
            [str(AEGISCTL), "--socket", str(path), "status"],
            capture_output=True,
            text=True,
            timeout=30,
            env=child_env(),
        )
        assert done.returncode == DaemonUntrusted.exit_code, done.stderr
        assert "[daemon_untrusted]" in done.stderr and "planted" in done.stderr
        assert received(proc) == 0


def test_the_daemon_account_is_accepted(planter: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same server, named as the daemon account (what /run/aegis holds in separated mode)
    monkeypatch.setenv(DAEMON_USER_ENV, planter.name)
    with short_root() as root:
        os.chown(root, planter.uid, planter.gid)
        proc, path = plant(root, planter.prefix())

        async def hello() -> str:
            async with AegisClient(path) as c:
                return c.daemon_version

        assert trio.run(hello) == "9"
        assert received(proc) > 0


def test_sdk_refuses_a_socket_in_a_world_writable_directory() -> None:
    with short_root() as root:
        shared = root / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # like /tmp: anyone could have put or replaced the socket
        proc, path = plant(shared, [])  # our own uid: only the directory is wrong
        with pytest.raises(DaemonUntrusted, match="writable by others"):
            trio.run(sdk_connect, path)
        assert received(proc) == 0


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    system = tmp_path / "system" / "aegisd.sock"
    monkeypatch.delenv("AEGIS_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(locate, "system_socket", lambda: system)
    personal = runtime / "aegis" / "aegisd.sock"
    # nothing exists: the personal path, so the error names the usual place
    assert locate.discover_socket() == personal
    system.parent.mkdir(parents=True)
    system.touch()
    assert locate.discover_socket() == system  # separated mode's socket
    personal.parent.mkdir(parents=True)
    personal.touch()
    assert locate.discover_socket() == personal  # the person's own daemon comes first
    monkeypatch.setenv("AEGIS_SOCKET", str(tmp_path / "env.sock"))
    assert locate.discover_socket() == tmp_path / "env.sock"
    assert locate.discover_socket(str(tmp_path / "x.sock")) == tmp_path / "x.sock"


def test_the_shim_reports_an_untrusted_socket_instead_of_using_it() -> None:
    from aegisd.mcp_shim.server import Shim

    with short_root() as root:
        shared = root / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        proc, path = plant(shared, [])
        shim = Shim(path)
        assert trio.run(lambda: shim.refresh(notify=False)) == {}
        assert shim.problem is not None and shim.problem.code == "daemon_untrusted"
        assert received(proc) == 0

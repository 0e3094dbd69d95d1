"""Peer identity: credential decoding (Linux and macOS layouts), /proc reads, rule matching.

The macOS decoders run here on Linux from packed bytes laid out as xnu defines them. Linux
reads use real sockets and real child processes; ``tests/test_peer_checks.py`` covers what the
daemon does with the result (another uid, a non-matching executable).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegisd.config import CallerRule
from aegisd.daemon.peer import (
    AuditToken,
    ExeHasher,
    PeerIdentity,
    decode_audit_token,
    decode_xucred,
    match_caller,
    read_peer,
    uid_allowed,
)
from aegisd.errors import PeerRejected

PY = os.path.realpath(sys.executable)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def kernel_has_peer_pidfd() -> bool:
    a, b = socket.socketpair()
    with a, b:
        try:
            os.close(struct.unpack("i", a.getsockopt(socket.SOL_SOCKET, 77, 4))[0])
        except OSError:
            return False
    return True


# ---- macOS structures --------------------------------------------------------------------


def xucred(version: int, uid: int, groups: list[int], ngroups: int | None = None) -> bytes:
    padded = (groups + [0] * 16)[:16]
    n = len(groups) if ngroups is None else ngroups
    return struct.pack("IIh16I", version, uid, n, *padded)


def test_xucred_layout_is_76_bytes() -> None:
    assert len(xucred(0, 501, [20])) == 76


def test_decode_xucred_gives_effective_uid_and_groups() -> None:
    assert decode_xucred(xucred(0, 501, [20, 12, 61])) == (501, (20, 12, 61))


def test_decode_xucred_clamps_a_lying_group_count() -> None:
    assert decode_xucred(xucred(0, 501, [20], ngroups=99))[1] == (20, *([0] * 15))
    assert decode_xucred(xucred(0, 501, [20], ngroups=-3)) == (501, ())


@pytest.mark.parametrize(
    "data",
    [xucred(1, 501, [20]), xucred(0, 501, [20])[:40], b""],
    ids=["version", "short", "empty"],
)
def test_decode_xucred_refuses_what_it_does_not_understand(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_xucred(data)


def test_decode_audit_token_reads_xnu_field_order() -> None:
    raw = struct.pack("8I", 501, 502, 20, 503, 21, 4242, 100007, 3)
    assert decode_audit_token(raw) == AuditToken(
        auid=501, euid=502, egid=20, ruid=503, rgid=21, pid=4242, asid=100007, pidversion=3
    )


def test_decode_audit_token_refuses_short_data() -> None:
    with pytest.raises(ValueError):
        decode_audit_token(b"\0" * 31)


# ---- uid rule -------------------------------------------------------------------------------


def test_uid_allowed_is_own_uid_or_listed() -> None:
    assert uid_allowed(1000, 1000, [])
    assert uid_allowed(1001, 1000, [1001, 1002])
    assert not uid_allowed(1001, 1000, [])
    assert not uid_allowed(0, 1000, [1001])  # root is not implicitly trusted


# ---- caller rules ---------------------------------------------------------------------------


def peer(**kwargs: object) -> PeerIdentity:
    base: dict[str, object] = {
        "uid": 1000,
        "gid": 1000,
        "pid": 4242,
        "exe": "/usr/bin/python3.12",
        "argv": ("python3", "/home/u/.local/bin/aegis-mcp", "--socket", "/run/x"),
    }
    base.update(kwargs)
    return PeerIdentity(**base)  # type: ignore[arg-type]


def test_rule_matches_on_exact_executable() -> None:
    rules = [CallerRule(name="mcp", exe=["/usr/bin/python3.12"], actions=["x"])]
    assert match_caller(peer(), rules, None) is rules[0]
    assert match_caller(peer(exe="/usr/bin/python3.11"), rules, None) is None


def test_rule_matches_on_an_executable_glob() -> None:
    rules = [CallerRule(name="mcp", exe=["/usr/bin/python3.*"], actions=["x"])]
    assert match_caller(peer(), rules, None) is rules[0]
    assert match_caller(peer(exe="/tmp/usr/bin/python3.12"), rules, None) is None


def test_rule_names_a_symlink_that_resolves_to_the_executable(tmp_path: Path) -> None:
    link = tmp_path / "python"
    link.symlink_to(PY)
    rules = [CallerRule(name="venv", exe=[str(link)], actions=["x"])]
    assert match_caller(peer(exe=PY), rules, None) is rules[0]


def test_replaced_executable_never_matches() -> None:
    rules = [CallerRule(name="mcp", exe=["/usr/bin/python3.12*"], actions=["x"])]
    assert match_caller(peer(exe="/usr/bin/python3.12 (deleted)"), rules, None) is None


def test_sha256_pin_must_match_the_running_image() -> None:
    good, bad = "a" * 64, "b" * 64
    rules = [CallerRule(name="pinned", exe=["/usr/bin/python3.12"], sha256=[good], actions=["x"])]
    assert match_caller(peer(), rules, good) is rules[0]
    assert match_caller(peer(), rules, bad) is None
    assert match_caller(peer(), rules, None) is None  # could not hash: no match, not a pass


def test_argv_globs_match_the_joined_command_line() -> None:
    rules = [CallerRule(name="mcp", argv=["*aegis-mcp*", "*other-tool*"], actions=["x"])]
    assert match_caller(peer(), rules, None) is rules[0]
    assert match_caller(peer(argv=("python3", "evil.py")), rules, None) is None
    assert match_caller(peer(argv=()), rules, None) is None


def test_uids_restrict_a_rule() -> None:
    rules = [CallerRule(name="u", uids=[1001], actions=["x"])]
    assert match_caller(peer(uid=1001), rules, None) is rules[0]
    assert match_caller(peer(uid=1000), rules, None) is None


def test_every_condition_of_a_rule_must_hold() -> None:
    rules = [
        CallerRule(name="strict", exe=["/usr/bin/python3.12"], argv=["*nope*"], actions=["x"]),
        CallerRule(name="loose", exe=["/usr/bin/python3.12"], actions=["x"]),
    ]
    assert match_caller(peer(), rules, None) is rules[1]


def test_first_matching_rule_wins() -> None:
    rules = [
        CallerRule(name="first", exe=["/usr/bin/*"], actions=["x"]),
        CallerRule(name="second", exe=["/usr/bin/python3.12"], actions=["x"]),
    ]
    assert match_caller(peer(), rules, None) is rules[0]


def test_no_rules_means_no_caller() -> None:
    assert match_caller(peer(), [], None) is None


def test_unreadable_executable_matches_no_exe_rule() -> None:
    rules = [CallerRule(name="mcp", exe=["/usr/bin/python3.12"], actions=["x"])]
    assert match_caller(peer(exe=""), rules, None) is None


# ---- reading a real peer (Linux) ------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    path = f"/tmp/aegpeer-{os.getpid()}.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(10)
    try:
        yield srv, path
    finally:
        srv.close()
        os.unlink(path)


CHILD = (
    "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
    "sys.stdout.write('connected\\n'); sys.stdout.flush(); sys.stdin.read()"
)


@linux_only
def test_read_peer_of_a_socketpair_is_this_process() -> None:
    a, b = socket.socketpair()
    with a, b:
        me = read_peer(a)
    assert (me.uid, me.gid, me.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert me.exe == PY
    assert me.exe_id is not None
    st = os.stat(PY)
    assert me.exe_id[:2] == (st.st_dev, st.st_ino)
    cmdline = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    assert me.argv == tuple(a.decode() for a in cmdline if a)
    assert me.parents and me.parents[0][0] == os.getppid()


@linux_only
def test_read_peer_identifies_a_connected_child(listener: tuple[socket.socket, str]) -> None:
    srv, path = listener
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, "--marker-7f3a"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "connected\n"
        conn, _ = srv.accept()
        with conn:
            p = read_peer(conn)
        assert p.pid == child.pid
        assert p.exe == PY
        assert p.argv[-1] == "--marker-7f3a"
        assert p.parents[0] == (os.getpid(), Path(f"/proc/{os.getpid()}/comm").read_text().strip())
        assert p.pidfd_verified == kernel_has_peer_pidfd()
    finally:
        child.communicate(timeout=10)


@linux_only
def test_peer_that_exited_before_identification_is_rejected(
    listener: tuple[socket.socket, str],
) -> None:
    # SO_PEERCRED keeps the old pid; its /proc entry may belong to someone else by now.
    srv, path = listener
    child = subprocess.run(
        [sys.executable, "-c", CHILD, path], input="", capture_output=True, text=True, timeout=10
    )
    assert child.returncode == 0  # exited and reaped
    if not kernel_has_peer_pidfd():
        pytest.skip("kernel < 6.5: no SO_PEERPIDFD, pid reuse cannot be excluded")
    conn, _ = srv.accept()
    with conn:
        with pytest.raises(PeerRejected):
            read_peer(conn)


@linux_only
def test_unreadable_proc_entries_degrade_to_an_anonymous_peer(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    with a, b:
        p = read_peer(a, proc_root=str(tmp_path))  # as if /proc/<pid>/exe gave EACCES/ENOENT
    assert p.uid == os.getuid()
    assert p.exe == "" and p.exe_id is None and p.argv == ()
    assert any("executable not readable" in n for n in p.notes)


# ---- executable hashing -------------------------------------------------------------------


def fake_proc(tmp_path: Path, pid: int, content: bytes) -> PeerIdentity:
    exe = tmp_path / str(pid) / "exe"
    exe.parent.mkdir(exist_ok=True)
    exe.write_bytes(content)
    st = exe.stat()
    return PeerIdentity(
        uid=0,
        gid=0,
        pid=pid,
        exe="/usr/bin/tool",
        exe_id=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        platform="linux",
    )


def test_hasher_hashes_the_running_image(tmp_path: Path) -> None:
    p = fake_proc(tmp_path, 10, b"binary v1")
    assert (
        ExeHasher().digest(p, proc_root=str(tmp_path)) == hashlib.sha256(b"binary v1").hexdigest()
    )


def test_hasher_caches_by_file_identity_and_never_rehashes(tmp_path: Path) -> None:
    hasher = ExeHasher()
    p = fake_proc(tmp_path, 10, b"binary v1")
    first = hasher.digest(p, proc_root=str(tmp_path))
    assert hasher.cached(p) == first
    (tmp_path / "10" / "exe").write_bytes(b"binary v2")  # same identity tuple in ``p``
    assert hasher.digest(p, proc_root=str(tmp_path)) == first
    # a different image (new inode/size/mtime) is hashed afresh
    q = fake_proc(tmp_path, 11, b"other binary")
    assert hasher.digest(q, proc_root=str(tmp_path)) == hashlib.sha256(b"other binary").hexdigest()


def test_hasher_gives_none_when_the_image_cannot_be_read(tmp_path: Path) -> None:
    p = fake_proc(tmp_path, 10, b"x")
    (tmp_path / "10" / "exe").unlink()
    assert ExeHasher().digest(p, proc_root=str(tmp_path)) is None
    anonymous = PeerIdentity(uid=0, gid=0, pid=1)
    assert ExeHasher().digest(anonymous) is None


def test_hasher_cache_is_bounded(tmp_path: Path) -> None:
    hasher = ExeHasher(max_entries=2)
    peers = [fake_proc(tmp_path, 20 + i, f"bin {i}".encode()) for i in range(3)]
    for p in peers:
        hasher.digest(p, proc_root=str(tmp_path))
    assert hasher.cached(peers[0]) is None
    assert hasher.cached(peers[2]) is not None


def test_pidfd_liveness_needs_no_permission_over_the_process() -> None:
    # polled, not signalled: pidfd_send_signal(0) fails with EPERM on another uid's process,
    # which would make "alive" unknowable in separated mode
    import subprocess

    from aegisd.daemon.peer import _pidfd_alive

    child = subprocess.Popen(["sleep", "30"])
    fd = os.pidfd_open(child.pid)
    try:
        assert _pidfd_alive(fd)
        child.kill()
        child.wait()
        assert not _pidfd_alive(fd)
    finally:
        os.close(fd)

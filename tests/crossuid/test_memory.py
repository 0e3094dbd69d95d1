"""Issue 12.5: another process of the daemon's uid cannot ptrace it nor read environ or mem.

The daemon runs as a throwaway non-root user (as in same-uid mode, where it runs as the
person); the "attacker" is a second process of that same uid. A plain process of that uid
is the control: its environ *is* readable by the attacker, so the probe can tell the two apart.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

from tests.corekit import SYSTEM_PYTHON, Files, child_env, status_roundtrip, write_config
from tests.crossuid.foreign import Account, ForeignDaemon, shared_root, start_daemon_as

# argv: pid. Prints "ptrace=<errno or ok> environ=<errno or ok> mem=<errno or ok>".
PROBE = r"""
import ctypes, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
out = []
if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
    out.append("ptrace=ok")
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
else:
    out.append(f"ptrace={ctypes.get_errno()}")
for name in ("environ", "mem"):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            f.read(1)
        out.append(f"{name}=ok")
    except OSError as e:
        out.append(f"{name}={e.errno}")
print(" ".join(out))
"""


def probe(as_account: Account, pid: int) -> dict[str, str]:
    done = subprocess.run(
        [*as_account.prefix(), SYSTEM_PYTHON, "-c", PROBE, str(pid)],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        check=True,
    )
    return dict(item.split("=") for item in done.stdout.split())


def test_same_uid_process_cannot_ptrace_or_read_environ_or_mem(
    daemon_user: Account, venv_python: Path, foreign_daemons: list[ForeignDaemon]
) -> None:
    with shared_root(daemon_user) as root:
        files: Files = write_config(root, allowed_uids=[0])
        d = start_daemon_as(
            daemon_user, files, venv_python, env={"AEGIS_SECRET_PROBE": "must-stay-inside"}
        )
        foreign_daemons.append(d)
        d.start()

        # control: an ordinary process of the same uid is open to the probe
        control = subprocess.Popen(
            [*daemon_user.prefix(), SYSTEM_PYTHON, "-c", "import time; time.sleep(60)"],
            env=child_env(),
        )
        try:
            assert probe(daemon_user, control.pid)["environ"] == "ok"
        finally:
            control.kill()
            control.wait()

        seen = probe(daemon_user, d.pid)
        assert seen == {
            "ptrace": str(errno.EPERM),
            "environ": str(errno.EACCES),
            "mem": str(errno.EACCES),
        }, seen

        # and the daemon itself still works while not dumpable (it reads /proc of peers,
        # its audit, its config): a status round trip from root (allowed_uids = [0])
        report = status_roundtrip(files.socket)
        assert report.hardening == "not dumpable (PR_SET_DUMPABLE 0)"
        assert report.daemon_uid == daemon_user.uid
        # root's /proc/<pid>/exe is not readable by the daemon's uid: exe unverified
        assert all(not p.exe_verified and p.exe == "" for p in report.peers)
        d.assert_no_crash()

"""The unit's riskiest directive, MemoryDenyWriteExecute=yes, with the real stack running.

No systemd user manager runs in CI containers, so ``mdwx_exec.py`` installs the same seccomp
rule that systemd 252 installs for the directive (plus no_new_privs) and execs the program.
Each test first shows the rule is in force (a W+X mapping is refused), then that what aegisd
needs still works: the daemon start-up with sd_notify and a status round trip, ctypes
callbacks, RS256 signing (cryptography), and the Secret Service keyring (jeepney + DH/AES).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.corekit import DaemonProcess, Files, status_roundtrip

from .keyring_session import KeyringSession

MDWX = Path(__file__).with_name("mdwx_exec.py")
AEGISD = Path(sys.executable).parent / "aegisd"

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
    reason="the seccomp shim is written for x86-64 Linux",
)


def test_keyring_and_crypto_work_under_memory_deny_write_execute(
    secret_service: KeyringSession,
) -> None:
    probe, stored, status = secret_service.run(
        [
            {"probe": "wx"},
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": "zq-value\n"},
            {"cli": ["secrets", "status", "--json"]},
        ],
        wrap=[sys.executable, str(MDWX)],
    )
    assert probe["wx_mapping"] == "denied"  # the rule is really in force
    assert probe["ctypes_callback"] == [1, 2, 3, 4]
    assert probe["rs256"] == {"sub": "x"}
    assert stored["exit"] == 0, stored
    assert json.loads(status["stdout"])["secrets"]["auth0_client_secret"]["present"] is True


def test_daemon_starts_and_serves_under_memory_deny_write_execute(
    write_config: Callable[..., Files], spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    files = write_config()
    argv = [sys.executable, str(MDWX), str(AEGISD), "--config", str(files.config)]
    daemon = spawn_daemon(files, argv=argv)  # returns after READY=1 (Type=notify)

    report = status_roundtrip(files.socket)

    assert report is not None
    # The daemon itself (same pid after the exec) runs under the filter.
    proc_status = Path(f"/proc/{daemon.pid}/status").read_text()
    assert "\nSeccomp:\t2\n" in proc_status
    assert "\nNoNewPrivs:\t1\n" in proc_status
    assert daemon.stop() == 0
    daemon.assert_no_crash()

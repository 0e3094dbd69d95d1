"""Issue 13.10 across accounts: doctor and a daemon whose socket is gone, in separated mode.

The daemon runs as a throwaway account with its audit log (and so its lock) in its own 0700
state directory. Root's doctor can probe the lock and names the running daemon; the person's
doctor cannot open it and says so instead of guessing "not running"; without the clients'
group it cannot even look at the socket, and says that.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.corekit import AEGISCTL, Files, child_env, write_config
from tests.crossuid.foreign import (
    Account,
    ForeignDaemon,
    shared_root,
    start_daemon_as,
    throwaway_group,
)


def doctor_daemon_check(files: Files, prefix: list[str], python: str) -> dict[str, str]:
    argv = [python, "-c", "from aegisctl.main import main; main()"] if prefix else [str(AEGISCTL)]
    options = ["--config", str(files.config), "--socket", str(files.socket)]
    done = subprocess.run(
        [*prefix, *argv, *options, "doctor", "--json", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env({"HOME": "/nonexistent"}),  # not root's home: the person cannot enter it
        cwd="/",
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout, done.stderr
    checks: dict[str, dict[str, str]] = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    return checks["daemon"]


def test_doctor_probes_the_lock_where_it_can_and_says_so_where_it_cannot(
    daemon_user: Account, person: Account, venv_python: Path, foreign_daemons: list[ForeignDaemon]
) -> None:
    with shared_root(daemon_user) as root, throwaway_group("c") as (group, gid):
        # separated mode's socket layout: a 0750 directory of the clients' group
        files = write_config(root, allowed_uids=[person.uid], socket_group=group)
        d = start_daemon_as(daemon_user, files, venv_python, groups=[gid])
        foreign_daemons.append(d)
        d.start()
        os.unlink(files.socket)

        as_root = doctor_daemon_check(files, [], "")
        assert as_root["verdict"] == "fail"
        assert as_root["detail"].startswith(
            f"aegisd is running (pid {d.pid}) but its socket {files.socket} is gone"
        )

        as_person = doctor_daemon_check(files, person.prefix(gid), str(venv_python))
        assert as_person["verdict"] == "fail"
        assert f"nothing at {files.socket}: aegisd is not running" in as_person["detail"]
        assert "cannot be seen from this account" in as_person["detail"]
        assert "Permission denied" in as_person["detail"]
        assert "sudo aegisctl doctor" in as_person["fix"]

        # without the clients' group (before logging in again) the directory is closed:
        # doctor says so instead of crashing on the lstat
        outside = doctor_daemon_check(files, person.prefix(), str(venv_python))
        assert (
            outside["detail"]
            == f"{files.socket}: its directory cannot be entered from this account"
        )

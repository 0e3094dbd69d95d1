"""Issue 12.6: which caller rules work when aegisd runs as its own account.

The daemon runs as a throwaway "daemon account" with the separated socket layout
(``[daemon] socket_group``: directory 0750 and socket 0660 of a throwaway group); the
"person" is another throwaway user in that group, and root is a third uid. Without
CAP_SYS_PTRACE the daemon cannot read ``/proc/<pid>/exe`` of either, so ``uids`` and ``argv``
rules match while ``exe`` and ``sha256`` rules fail closed, saying why. With the capability
(what ``service install --system --verify-exe`` grants) exe and sha256 rules work again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegisd import wire
from aegisd.daemon.peer import EXE_UNVERIFIED
from tests.corekit import (
    AEGISCTL,
    SYSTEM_PYTHON,
    ClientRun,
    Files,
    audit_records,
    child_env,
    run_raw_client,
    wait_for_record,
    write_config,
)
from tests.crossuid.foreign import (
    Account,
    ForeignDaemon,
    shared_root,
    start_daemon_as,
    throwaway_group,
)

SYSTEM_EXE = os.path.realpath(SYSTEM_PYTHON)


@pytest.fixture
def clients_group() -> Iterator[tuple[str, int]]:
    with throwaway_group("c") as group:
        yield group


def rules(person: Account) -> list[dict[str, object]]:
    with open(SYSTEM_EXE, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return [
        {"name": "by-exe", "exe": [SYSTEM_EXE], "argv": ["*marker-exe*"], "actions": ["demo.*"]},
        {"name": "by-sha", "sha256": [digest], "argv": ["*marker-sha*"], "actions": ["demo.*"]},
        {"name": "by-argv", "argv": ["*marker-argv*"], "actions": ["demo.*"]},
        {"name": "by-uid", "uids": [person.uid], "actions": ["demo.*"]},
    ]


def connect(files: Files, marker: str, prefix: list[str]) -> ClientRun:
    hello = wire.Hello(client="crossuid")
    return run_raw_client(
        files.socket,
        [hello, wire.ListActions(id=1)],
        want=2,
        python=SYSTEM_PYTHON,
        prefix=prefix,
        marker=[marker],
    )


def caller_of(run: ClientRun) -> str | None:
    assert run.outcome == "OK", run
    welcome, answer = run.messages
    assert isinstance(welcome, wire.Welcome)
    if isinstance(answer, wire.Actions):
        return welcome.peer.caller
    assert isinstance(answer, wire.Error) and answer.code == "peer_rejected", answer
    assert welcome.peer.caller is None
    return f"rejected: {answer.message}"


def start(
    daemon_user: Account,
    person: Account,
    group: tuple[str, int],
    root: Path,
    venv_python: Path,
    started: list[ForeignDaemon],
    caps: bool = False,
) -> Files:
    files = write_config(
        root, callers=rules(person), allowed_uids=[person.uid, 0], socket_group=group[0]
    )
    d = start_daemon_as(
        daemon_user,
        files,
        venv_python,
        groups=[group[1]],
        env={"AEGIS_DAEMON_USER": daemon_user.name},  # it is "the aegis account" here
    )
    if caps:  # what --verify-exe grants: exactly CAP_SYS_PTRACE
        assert d.argv is not None
        d.argv[4:4] = ["--inh-caps=+sys_ptrace", "--ambient-caps=+sys_ptrace"]
    started.append(d)
    d.start()
    return files


def test_without_cap_sys_ptrace_uids_and_argv_rules_match_exe_and_sha256_fail_closed(
    daemon_user: Account,
    person: Account,
    clients_group: tuple[str, int],
    venv_python: Path,
    foreign_daemons: list[ForeignDaemon],
) -> None:
    with shared_root(daemon_user) as root:
        files = start(daemon_user, person, clients_group, root, venv_python, foreign_daemons)
        # the separated layout, made by the daemon: 0750 dir and 0660 socket of the group
        dst, sst = os.lstat(files.socket.parent), os.lstat(files.socket)
        assert (stat.S_IMODE(dst.st_mode), dst.st_gid) == (0o750, clients_group[1])
        assert (stat.S_IMODE(sst.st_mode), sst.st_gid) == (0o660, clients_group[1])
        assert sst.st_uid == daemon_user.uid

        as_person = person.prefix(clients_group[1])
        assert caller_of(connect(files, "marker-argv", as_person)) == "by-argv"
        # the exe rule cannot verify the person's python, so the uid rule is what matches
        assert caller_of(connect(files, "marker-exe", as_person)) == "by-uid"
        # root is not in by-uid: exe and sha256 rules refuse it, saying why
        for marker, rule in (("marker-exe", "by-exe"), ("marker-sha", "by-sha")):
            refused = caller_of(connect(files, marker, []))
            assert refused is not None and refused.startswith("rejected: ")
            assert f"'{rule}': {EXE_UNVERIFIED}" in refused
            assert "aegisd saw exe unverified" in refused
        assert caller_of(connect(files, "marker-argv", [])) == "by-argv"
        # the person is not the operator: reload is for the daemon's account or root
        run = run_raw_client(
            files.socket,
            [wire.Hello(client="crossuid"), wire.Reload(id=7)],
            want=2,
            python=SYSTEM_PYTHON,
            prefix=as_person,
        )
        refused = run.messages[1]
        assert isinstance(refused, wire.Error) and refused.code == "peer_rejected"
        assert "sudo aegisctl reload" in refused.message
        # a person who is not in the group cannot even connect
        assert connect(files, "marker-argv", person.prefix()).outcome == "CONNECT-ERROR"

        record = wait_for_record(
            files.audit, lambda r: r.get("event") == "connect" and r.get("caller") == "by-uid"
        )
        assert record["exe"] == "exe unverified" and record["exe_verified"] is False
        assert record["argv0"] == SYSTEM_PYTHON
        assert EXE_UNVERIFIED in foreign_daemons[0].stderr()  # the daemon's log says it too
        connects = [r for r in audit_records(files.audit) if r.get("event") == "connect"]
        assert connects and all(r["exe_verified"] is False for r in connects)


def test_status_and_doctor_say_separated_mode(
    daemon_user: Account,
    person: Account,
    clients_group: tuple[str, int],
    venv_python: Path,
    foreign_daemons: list[ForeignDaemon],
) -> None:
    with shared_root(daemon_user) as root:
        files = start(daemon_user, person, clients_group, root, venv_python, foreign_daemons)
        env = child_env({"AEGIS_DAEMON_USER": daemon_user.name})
        done = subprocess.run(
            [str(AEGISCTL), "--socket", str(files.socket), "doctor", "--json", "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert checks["mode"]["verdict"] == "ok", checks["mode"]
        assert checks["mode"]["detail"].startswith(f"separated: aegisd runs as {daemon_user.name}")
        assert checks["socket-dir"]["verdict"] == "ok", checks["socket-dir"]
        status = subprocess.run(
            [str(AEGISCTL), "--socket", str(files.socket), "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert f"mode     separated (aegisd runs as {daemon_user.name}" in status.stdout
        assert "exe unverified" in status.stdout  # aegisctl itself, seen from the daemon


def test_with_cap_sys_ptrace_exe_and_sha256_rules_match_again(
    daemon_user: Account,
    person: Account,
    clients_group: tuple[str, int],
    venv_python: Path,
    foreign_daemons: list[ForeignDaemon],
) -> None:
    with shared_root(daemon_user) as root:
        files = start(
            daemon_user, person, clients_group, root, venv_python, foreign_daemons, caps=True
        )
        assert caller_of(connect(files, "marker-exe", [])) == "by-exe"
        assert caller_of(connect(files, "marker-sha", [])) == "by-sha"
        as_person = person.prefix(clients_group[1])
        assert caller_of(connect(files, "marker-exe", as_person)) == "by-exe"


def test_a_daemon_outside_the_socket_group_says_how_to_fix_it(
    daemon_user: Account,
    person: Account,
    clients_group: tuple[str, int],
    venv_python: Path,
    foreign_daemons: list[ForeignDaemon],
) -> None:
    with shared_root(daemon_user) as root:
        files = write_config(
            root, callers=rules(person), allowed_uids=[person.uid], socket_group=clients_group[0]
        )
        d = start_daemon_as(daemon_user, files, venv_python)  # not in the group
        foreign_daemons.append(d)
        d.launch()
        assert d.wait_exit() == 78
        assert f"SupplementaryGroups={clients_group[0]}" in d.stderr()
        assert "Traceback" not in d.stderr()

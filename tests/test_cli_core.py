"""``aegisctl status|audit|policy`` and ``aegisd --config`` as an operator runs them.

Each command runs as a real subprocess, so exit codes and stderr are exactly what a shell sees.
The audit-chain tests tamper with a log written by a real daemon, including a torn tail left
by ``kill -9`` and rotation.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.corekit import (
    AEGISD,
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    child_env,
    run_ctl,
    short_root,
    status_roundtrip,
)
from tests.corekit import write_config as write_config_at

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


# ---- status ---------------------------------------------------------------------------------


def test_status_shows_the_running_daemon(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    done = run_ctl(files, "status")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith(f"aegisd {version('aegis-broker')}  pid {daemon_proc.pid}  up ")
    assert f"  socket   {files.socket}" in out
    assert f"  config   {files.config}" in out
    assert "  policy   1 action(s), 1 caller rule(s), generation 0" in out
    assert "  pending  0 approval(s)" in out
    assert any(line.startswith(f"  audit    {files.audit} [ok] audit chain intact") for line in out)
    assert "  peers    1 connected" in out  # aegisctl itself


def test_status_says_when_no_rule_allows_anything(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    d = spawn_daemon(write_config(callers=[]))
    done = run_ctl(d.files, "status")
    assert done.returncode == 0
    assert "no [[callers]] rules: every action is denied (default deny)" in done.stdout


def test_status_flags_a_broken_audit_chain(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    lines = files.audit.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"event":"start"', b'"event":"stArt"')
    files.audit.write_bytes(b"".join(lines))
    done = run_ctl(files, "status")
    assert done.returncode == 1
    # the edit shows; so may a record the daemon appended while the test rewrote the file
    # (then lost: "truncated"), whichever the verifier meets first
    line = next(x for x in done.stdout.splitlines() if x.startswith("  audit    "))
    assert line.startswith(f"  audit    {files.audit} [BROKEN] audit chain BROKEN: "), line
    assert "audit.jsonl:1:" in line or "truncated" in line, line


def test_status_without_a_daemon_exits_3_with_a_hint(aeg_root: Path) -> None:
    missing = aeg_root / "nothing-here.sock"
    done = run_ctl(None, "status", socket_path=missing)
    assert done.returncode == 3
    assert done.stderr == (
        f"aegisctl: aegisd is not running at {missing} (start it with `aegisd` or "
        "`aegisctl service install`) [daemon_unavailable]\n"
    )
    assert done.stdout == ""


def test_status_on_a_dead_daemons_socket_exits_3(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    spawn_daemon(files).stop(signal.SIGKILL)
    assert files.socket.exists()
    done = run_ctl(files, "status", "--json")
    assert done.returncode == 3
    error = json.loads(done.stdout)["error"]  # --json: the failure as JSON too
    assert error["code"] == "daemon_unavailable" and error["exit_code"] == 3
    assert "aegisd is not running" in error["message"]


# ---- audit verify ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_log() -> Iterator[Path]:
    """A log written by a real daemon: start, three connections, stop."""
    with short_root() as root:
        files = write_config_at(root)
        d = DaemonProcess(files).start()
        try:
            for _ in range(3):
                status_roundtrip(files.socket)
            assert d.stop() == 0
        finally:
            d.cleanup()
        yield files.audit


@pytest.fixture
def log_copy(real_log: Path, aeg_root: Path) -> Path:
    path = aeg_root / "audit.jsonl"
    shutil.copy(real_log, path)
    return path


def verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(None, "audit", "verify", "--file", str(path), *extra)


def edit_lines(path: Path, change: Callable[[list[bytes]], None]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    change(lines)
    path.write_bytes(b"".join(lines))


def test_verify_accepts_an_untouched_log(log_copy: Path) -> None:
    n = len(log_copy.read_bytes().splitlines())
    done = verify(log_copy)
    assert done.returncode == 0
    assert done.stdout == f"audit chain intact: {n} records in 1 file(s)\n"


def _edit_field(lines: list[bytes]) -> None:
    rec = json.loads(lines[1])
    rec["ts"] = rec["ts"] - 3600  # backdate a record: the kind of edit someone would make
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _delete(lines: list[bytes]) -> None:
    del lines[2]


def _reorder(lines: list[bytes]) -> None:
    lines[2], lines[3] = lines[3], lines[2]


def _truncate_last(lines: list[bytes]) -> None:
    lines[-1] = lines[-1][:25]


@pytest.mark.parametrize(
    ("tamper", "line", "what"),
    [
        (_edit_field, 2, "record content does not match its hash (edited)"),
        (_delete, 3, "chain broken (record deleted, reordered or edited)"),
        (_reorder, 3, "chain broken (record deleted, reordered or edited)"),
        (_truncate_last, None, "torn last line (incomplete write, e.g. a crash)"),
    ],
    ids=["edited field", "deleted record", "reordered records", "torn last line"],
)
def test_verify_detects_tampering_and_names_the_line(
    log_copy: Path, tamper: Callable[[list[bytes]], None], line: int | None, what: str
) -> None:
    edit_lines(log_copy, tamper)
    line = line or len(log_copy.read_bytes().splitlines())
    done = verify(log_copy)
    assert done.returncode == 1
    assert done.stdout.startswith(f"audit chain BROKEN: audit.jsonl:{line}: {what}\n")
    assert f"  problem: audit.jsonl:{line}: {what}" in done.stdout


def test_verify_json_lists_problems(log_copy: Path) -> None:
    edit_lines(log_copy, _delete)
    done = verify(log_copy, "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["files"] == 1
    assert report["problems"][0].startswith("audit.jsonl:3: ")


def test_verify_of_a_missing_log_fails(aeg_root: Path) -> None:
    done = verify(aeg_root / "none.jsonl")
    assert done.returncode == 17  # not_found
    assert "no audit log" in done.stderr


def test_torn_tail_after_kill_9_is_reported_then_acknowledged_at_restart(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    first = spawn_daemon(files)
    status_roundtrip(files.socket)
    first.stop(signal.SIGKILL)
    # kill -9 cannot be timed to land mid-write, so leave what it would: a partial last line
    torn = len(files.audit.read_bytes().splitlines()) + 1
    partial = b'{"conn":9,"event":"conn'
    with open(files.audit, "ab") as f:
        f.write(partial)
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1
    assert f"audit.jsonl:{torn}: torn last line (incomplete write, e.g. a crash)" in done.stdout

    second = spawn_daemon(files)  # the restart acknowledges the torn line in the chain
    assert status_roundtrip(files.socket).audit_ok
    assert f"audit log: torn last line {torn} ({len(partial)} bytes) after a crash" in (
        second.stderr()
    )
    assert second.stop() == 0
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("audit chain intact: ")
    assert "1 warning(s)" in done.stdout
    assert (
        f"  warning: audit.jsonl:{torn}: torn line left by a crash, acknowledged at restart"
        in done.stdout
    )
    (ack,) = [r for r in audit_records(files.audit) if r["event"] == "torn_tail"]
    assert (ack["line"], ack["bytes"]) == (torn, len(partial))


def test_restart_after_losing_only_the_final_newline_keeps_the_chain(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    first = spawn_daemon(files)
    status_roundtrip(files.socket)
    first.stop(signal.SIGKILL)
    files.audit.write_bytes(files.audit.read_bytes()[:-1])  # a complete record, no "\n"
    assert spawn_daemon(files).stop() == 0
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 0, done.stdout
    assert [r["event"] for r in audit_records(files.audit)][-2:] == ["start", "stop"]


def test_rotation_keeps_the_chain_verifiable(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config(audit_rotate_bytes=1500)
    d = spawn_daemon(files)
    for _ in range(15):
        status_roundtrip(files.socket)
    assert d.stop() == 0
    rotated = sorted(files.audit.parent.glob("audit.jsonl.*"))
    assert len(rotated) >= 2
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 0, done.stdout
    assert f"records in {len(rotated) + 1} file(s)" in done.stdout
    edit_lines(files.audit.with_name("audit.jsonl.1"), _edit_field)
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1
    assert "audit.jsonl.1:2: record content does not match its hash (edited)" in done.stdout


def test_audit_tail_shows_the_last_records(daemon_proc: DaemonProcess) -> None:
    files = daemon_proc.files
    status_roundtrip(files.socket)
    assert daemon_proc.stop() == 0
    done = run_ctl(files, "audit", "tail", "-n", "2", "--json")
    assert done.returncode == 0
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["event"] for r in records] == ["disconnect", "stop"]
    done = run_ctl(files, "audit", "tail", "-n", "1")
    (line,) = done.stdout.splitlines()
    assert " stop " in line and f"pid={daemon_proc.pid}" in line


# ---- policy check and aegisd --config ----------------------------------------------------------

THREE_PROBLEMS = {
    "callers": [{"name": "c", "actions": ["nope.*"]}],
    "actions": {
        "x": {"approval": "none", "request": {"url": "http://evil.example/"}},
        "y": {"approval": "none"},
    },
}


def test_policy_check_accepts_a_valid_file(write_config: WriteConfig) -> None:
    files = write_config()
    done = run_ctl(files, "policy", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{files.config}: ok (1 action(s), 1 caller rule(s))\n")


def test_policy_check_notes_that_no_caller_means_default_deny(write_config: WriteConfig) -> None:
    done = run_ctl(write_config(callers=[]), "policy", "check")
    assert done.returncode == 0
    assert "note: no [[callers]] rules, so no process may request any action" in done.stdout


def test_policy_check_prints_every_problem(write_config: WriteConfig, aeg_root: Path) -> None:
    files = write_config(**THREE_PROBLEMS)
    other = aeg_root / "other.toml"
    shutil.copy(files.config, other)
    done = run_ctl(None, "policy", "check", str(other))  # a file other than the config
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        f"{other}:7: key callers[0].actions: 'nope.*' matches no defined action",
        f"{other}:11: key actions.x.request.url: plain http is only allowed to a loopback host",
        f"{other}:13: key actions.y.request: required when delivery is 'proxy'",
        "3 problem(s) found",
    ]


def aegisd(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AEGISD), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[daemon]\nmax_connections = "many"\n', ":2: key daemon.max_connections: expected an"),
        ('[daemon]\nsokcet = "/x"\n', ":2: key daemon.sokcet: unknown key; did you mean socket?"),
        ('[actions.x]\nparams = { a = "(" }\n', ":2: key actions.x.params.a: invalid regular exp"),
        ("[daemon\n", ": not valid TOML"),
    ],
    ids=["wrong type", "wrong key", "bad regex", "not TOML"],
)
def test_aegisd_refuses_an_invalid_config_with_exit_78(
    aeg_root: Path, text: str, expected: str
) -> None:
    path = aeg_root / "bad.toml"
    path.write_text(text)
    done = aegisd(path)
    assert done.returncode == 78
    assert done.stderr.startswith(f"aegisd: {path}{expected}")
    assert "Traceback" not in done.stderr


def test_aegisd_lists_every_policy_problem(write_config: WriteConfig) -> None:
    files = write_config(**THREE_PROBLEMS)
    done = aegisd(files.config)
    assert done.returncode == 78
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"aegisd: {files.config}: key callers[0].actions")
    assert lines[1:] == [
        f"  {files.config}: key actions.x.request.url: "
        "plain http is only allowed to a loopback host",
        f"  {files.config}: key actions.y.request: required when delivery is 'proxy'",
    ]
    assert not files.socket.exists()


def test_aegisd_with_a_missing_config_file(aeg_root: Path) -> None:
    done = aegisd(aeg_root / "missing.toml")
    assert done.returncode == 78
    assert done.stderr == f"aegisd: {aeg_root / 'missing.toml'}: file not found\n"


def test_aegisctl_uses_the_configs_socket(daemon_proc: DaemonProcess) -> None:
    # no --socket: the path comes from --config, like an operator would run it
    done = run_ctl(daemon_proc.files, "status", "--json")
    assert json.loads(done.stdout)["pid"] == daemon_proc.pid
    with RawClient(daemon_proc.files.socket) as c:
        assert c.hello().daemon_version == version("aegis-broker")

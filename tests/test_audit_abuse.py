"""Issue 13, findings 3, 6 and 9 (audit part): the audit log against a same-uid attacker.

Each test drives a real ``aegisd`` subprocess over its socket and fails on the code before
the fix: a refusal flood erased history through rotation and "verify" said intact; a log cut
at a line boundary verified as intact; a ``Status`` on a large log held the append lock while
it verified, so every request waited; a pre-created 0666 log, a symlinked log and a log in a
directory of another uid were used as found.
"""

from __future__ import annotations

import json
import os
import selectors
from collections.abc import Callable
from pathlib import Path

import pytest

from aegisd import wire
from tests.auditgen import write_chain
from tests.corekit import (
    DaemonProcess,
    Files,
    RawClient,
    audit_records,
    run_ctl,
    status_roundtrip,
    wait_for,
    wait_for_record,
)

WriteConfig = Callable[..., Files]
Spawn = Callable[..., DaemonProcess]

CONNECTIONS = 8
PER_CONNECTION = 60


def all_records(files: Files) -> list[dict[str, object]]:
    """Every record of the log and its rotated files, oldest first."""
    olds = sorted(
        (p for p in files.audit.parent.glob("audit.jsonl.*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    out: list[dict[str, object]] = []
    for p in [*olds, files.audit]:
        out += audit_records(p)
    return out


def _doctor_audit(files: Files) -> dict[str, object]:
    done = run_ctl(files, "doctor", "--json")
    checks = json.loads(done.stdout)["checks"]
    return next(c for c in checks if c["name"] == "audit")


# ---- finding 3: a refusal flood -----------------------------------------------------------


def test_a_refusal_flood_writes_a_bounded_number_of_records_and_a_counted_summary(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config(
        audit_rotate_bytes=4000,  # before the fix: rotation deleted the oldest of 10 files
        extra="[audit]\nrefusals_per_second = 1.0\nrefusal_burst = 5\nsummary_interval = 0.5",
    )
    d = spawn_daemon(files)
    with RawClient(files.socket) as c:  # an operator's record the flood must not erase
        c.hello()
        assert isinstance(c.ask(wire.Lock(id=1)), wire.Locked)
    clients = [RawClient(files.socket) for _ in range(CONNECTIONS)]
    try:
        for c in clients:
            c.hello()
        for c in clients:  # pipelined, as fast as the socket takes them
            c.send_raw(
                b"".join(
                    wire.encode(wire.Proxy(id=i + 1, action="nope.flood", params={}))
                    for i in range(PER_CONNECTION)
                )
            )
        codes = [getattr(c.recv(), "code", None) for c in clients for _ in range(PER_CONNECTION)]
    finally:
        for c in clients:
            c.close()
    # the client still gets its typed error, every time
    assert codes == ["unknown_action"] * (CONNECTIONS * PER_CONNECTION)

    def summarised() -> list[dict[str, object]] | None:
        recs = all_records(files)
        counted = sum(int(str(r["count"])) for r in recs if r["event"] == "refusals_suppressed")
        one_by_one = [r for r in recs if r["event"] == "refused"]
        return recs if counted + len(one_by_one) == CONNECTIONS * PER_CONNECTION else None

    recs = wait_for(summarised, timeout=10.0)
    assert recs is not None, "the summaries do not add up to the refusals"
    refused = [r for r in recs if r["event"] == "refused"]
    # the burst, plus one a second while the flood lasted (well under 10 s here)
    assert 5 <= len(refused) <= 15, len(refused)
    summary = next(r for r in recs if r["event"] == "refusals_suppressed")
    assert summary["pid"] == os.getpid() and summary["code"] == "unknown_action"
    assert summary["actions"] == ["nope.flood"]
    assert float(str(summary["until"])) >= float(str(summary["since"]))
    # nothing was deleted: the chain starts at the genesis with the daemon's start and the lock
    assert [r["event"] for r in recs[:1]] == ["start"]
    assert any(r["event"] == "lock" for r in recs)
    report = status_roundtrip(files.socket)
    counted = sum(int(str(r["count"])) for r in recs if r["event"] == "refusals_suppressed")
    assert report.audit_suppressed == counted
    assert any("refusals_suppressed" in w for w in report.audit_warnings)
    check = _doctor_audit(files)
    assert check["verdict"] == "warn" and "refusals_suppressed" in check["detail"]
    assert d.stop() == 0
    done = run_ctl(files, "audit", "verify", "--json")
    assert done.returncode == 0, done.stdout
    out = json.loads(done.stdout)
    assert out["ok"] and out["pruned"] == 0


def test_rotation_past_keep_files_records_the_prune_and_verify_says_pruned(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config(audit_rotate_bytes=1500, extra="[audit]\nkeep_files = 2")
    d = spawn_daemon(files)
    for _ in range(25):
        status_roundtrip(files.socket)

    def warned() -> wire.StatusReport | None:  # Status may answer a result up to 1 s old
        report = status_roundtrip(files.socket)
        return report if any("records pruned" in w for w in report.audit_warnings) else None

    assert wait_for(warned, timeout=10.0)
    done = run_ctl(files, "status")
    assert "warning: " in done.stdout and "records pruned" in done.stdout
    check = _doctor_audit(files)
    assert check["verdict"] == "warn", check
    assert "records pruned" in str(check["detail"])
    assert d.stop() == 0
    assert len([p for p in files.audit.parent.glob("audit.jsonl.*")]) == 2
    pruned = [r for r in all_records(files) if r["event"] == "pruned"]
    assert pruned, "rotation deleted files without saying so in the chain"
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 0, done.stdout
    first = all_records(files)[0]
    gone = int(str(first["seq"])) - 1
    assert done.stdout.startswith(f"audit chain verified, {gone} records pruned"), done.stdout
    assert "intact" not in done.stdout
    out = json.loads(run_ctl(files, "audit", "verify", "--json").stdout)
    assert out["ok"] and out["pruned"] == gone
    # deleting the oldest kept file by hand is not a prune: the chain says where it started
    max(files.audit.parent.glob("audit.jsonl.*"), key=lambda p: int(p.suffix[1:])).unlink()
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1
    assert "deleted without a prune record" in done.stdout


def _cut_last_lines(path: Path, n: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-n]))  # at a line boundary: a valid, shorter chain


def test_a_log_truncated_at_a_line_boundary_is_reported_by_verify_and_at_restart(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    d = spawn_daemon(files)
    for _ in range(3):
        status_roundtrip(files.socket)
    assert d.stop() == 0
    assert run_ctl(files, "audit", "verify").returncode == 0
    _cut_last_lines(files.audit, 3)  # the last connection and the stop record
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1, done.stdout
    assert "audit chain BROKEN: truncated: the log ends at seq" in done.stdout
    # restarted on the cut log, the daemon notices and says so in the chain, for good
    d = spawn_daemon(files)
    report = status_roundtrip(files.socket)
    assert not report.audit_ok
    assert "found the log truncated at restart" in report.audit_detail
    assert "audit log truncated" in d.stderr()
    assert d.stop() == 0
    # the evidence is written first at restart, before anything that could still fail
    events = [r["event"] for r in audit_records(files.audit)]
    assert events.index("truncated") < len(events) - 1 - events[::-1].index("start")
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1
    assert "found the log truncated at restart" in done.stdout


def test_a_forged_anchor_is_refused(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    d = spawn_daemon(files)
    status_roundtrip(files.socket)
    assert d.stop() == 0
    _cut_last_lines(files.audit, 3)
    tip = audit_records(files.audit)[-1]
    anchor = files.audit.with_name("audit.anchor")
    slots = [json.loads(x) for x in anchor.read_text().splitlines() if x.strip()]
    latest = max(slots, key=lambda x: x["seq"])
    forged = latest | {"seq": tip["seq"], "hash": tip["hash"]}
    anchor.write_text(json.dumps(forged))  # without the key, the MAC cannot follow
    done = run_ctl(files, "audit", "verify")
    assert done.returncode == 1
    assert "does not match its MAC" in done.stdout


# ---- finding 6: Status on a large log -------------------------------------------------------


def test_status_on_a_large_log_does_not_hold_up_other_requests(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    records = write_chain(files.audit, 48 * 1024 * 1024)  # ~2 s of verification here
    spawn_daemon(files)
    a, b = RawClient(files.socket, timeout=30.0), RawClient(files.socket, timeout=30.0)
    try:
        a.hello()
        b.hello()
        sel = selectors.DefaultSelector()
        sel.register(a.sock, selectors.EVENT_READ)
        a.send(wire.Status(id=1))
        for i in range(3):  # each Lock appends a durable record: it needs the append lock
            answer = b.ask(wire.Lock(id=10 + i))
            assert isinstance(answer, wire.Locked), answer
            # before the fix the Status verified the whole log under the append lock, so a
            # Lock was answered only after the Status (its answer is then already waiting)
            assert not sel.select(timeout=0), f"lock {i + 1} waited for the Status"
        assert sel.select(timeout=30.0)
        first = a.recv()
        assert isinstance(first, wire.StatusReport), first
        assert first.audit_ok

        def caught_up() -> wire.StatusReport | None:
            report = a.status()
            return None if report.audit_verifying else report

        final = wait_for(caught_up, timeout=60.0)
        assert final is not None
        assert final.audit_ok, final.audit_detail
        assert final.audit_detail.startswith("audit chain intact: ")
        recorded = int(final.audit_detail.split(": ")[1].split(" ")[0])
        assert recorded > records  # the generated history plus what this daemon wrote
    finally:
        a.close()
        b.close()


def test_an_edit_of_an_already_verified_record_still_shows_in_status(
    daemon_proc: DaemonProcess,
) -> None:
    files = daemon_proc.files
    assert status_roundtrip(files.socket).audit_ok  # verified once: the check is incremental
    wait_for_record(files.audit, lambda r: r["event"] == "disconnect")  # no write in flight
    lines = files.audit.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"event":"start"', b'"event":"stArt"')
    files.audit.write_bytes(b"".join(lines))

    def broken() -> wire.StatusReport | None:
        report = status_roundtrip(files.socket)
        return None if report.audit_ok else report

    # the verified part is re-hashed at most every 5 s (a Status must stay cheap); before
    # the fix a Status reused its verification for 10 s, so this timed out
    report = wait_for(broken, timeout=8.0)
    assert report is not None, "the edit never showed in status"
    assert report.audit_detail.startswith("audit chain BROKEN: audit.jsonl:1:")


# ---- finding 9: files prepared by someone else ----------------------------------------------


def _refused(d: DaemonProcess) -> str:
    return d.refused(78)


def test_a_pre_created_world_writable_log_is_refused(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    files.audit.parent.mkdir(mode=0o700, parents=True)
    files.audit.write_bytes(b"")
    files.audit.chmod(0o666)
    err = _refused(spawn_daemon(files, start=False))
    assert f"{files.audit}: refusing the audit log: its mode is 0666" in err
    assert files.audit.read_bytes() == b""  # nothing appended


def test_a_symlinked_log_is_refused_not_followed(
    write_config: WriteConfig, spawn_daemon: Spawn, tmp_path: Path
) -> None:
    files = write_config()
    files.audit.parent.mkdir(mode=0o700, parents=True)
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    target.chmod(0o600)
    files.audit.symlink_to(target)
    err = _refused(spawn_daemon(files, start=False))
    assert "the audit log is a symlink; refusing to follow it" in err
    assert target.read_bytes() == b""


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_log_directory_of_another_uid_is_refused(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    theirs = aeg_root / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)  # nobody
    files = write_config(audit_path=theirs / "audit.jsonl")
    err = _refused(spawn_daemon(files, start=False))
    assert f"{theirs}: refusing the audit directory: owned by uid 65534" in err
    assert not (theirs / "audit.jsonl").exists()


def test_a_log_directory_reached_through_a_symlink_to_another_uid_is_refused(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    theirs = aeg_root / "theirs"
    theirs.mkdir(mode=0o777)
    theirs.chmod(0o777)  # writable by anyone: whoever may write it can swap the log
    link = aeg_root / "state-link"
    link.symlink_to(theirs)
    files = write_config(audit_path=link / "audit.jsonl")
    err = _refused(spawn_daemon(files, start=False))
    assert "refusing the audit directory" in err
    assert not (theirs / "audit.jsonl").exists()

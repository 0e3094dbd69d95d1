"""``aegisd.daemon.audit_verify``: incremental checks follow appends, rotation and tampering."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from aegisd.daemon import audit_verify
from aegisd.daemon.audit import AuditLog
from aegisd.daemon.audit_verify import IncrementalVerifier


def _log(path: Path, **kwargs: int) -> AuditLog:
    log = AuditLog(path, now=lambda: 1_700_000_000.0, fsync=False, **kwargs)
    log.open()
    return log


def test_each_check_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path)
    for i in range(10):
        log.append("connect", conn=i)
    v = IncrementalVerifier(path)
    res = v.catch_up(log.tip)
    assert res.ok and res.records == 10
    first = v.bytes_verified
    log.append("connect", conn=99)
    res = v.catch_up(log.tip)
    assert res.ok and res.records == 11
    assert v.bytes_verified - first < 400  # one record, not the whole file again


def test_rotation_is_followed_as_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path, rotate_bytes=600)
    v = IncrementalVerifier(path)
    for i in range(40):
        log.append("connect", conn=i, exe="/usr/bin/python3")
        if i % 7 == 0:
            assert v.catch_up(log.tip).ok
    res = v.catch_up(log.tip)
    assert res.ok, res.problems
    assert res.last_seq == log.tip[0]
    assert res.files == len(list(path.parent.glob("audit.jsonl*")))


def test_a_cut_tail_does_not_reach_the_writers_tip(tmp_path: Path) -> None:
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path)
    for i in range(5):
        log.append("connect", conn=i)
    v = IncrementalVerifier(path)
    assert v.catch_up(log.tip).ok
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    res = v.catch_up(log.tip)
    assert not res.ok
    assert any("truncated" in p for p in res.problems), res.problems


def test_an_edit_of_a_verified_record_is_found_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path)
    for i in range(5):
        log.append("connect", conn=i)
    v = IncrementalVerifier(path)
    assert v.catch_up(log.tip).ok
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[2])
    rec["conn"] = 7
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    res = v.catch_up(log.tip)
    assert not res.ok
    assert res.problems[0].startswith("audit.jsonl:3:")


def test_records_appended_between_a_check_and_a_rotation_are_verified_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The followed file grows after its size was read, then rotates: its tail holds several
    records, each to be verified as a record (a flood makes this window likely)."""
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path, rotate_bytes=2000)
    for i in range(5):
        log.append("connect", conn=i)
    v = IncrementalVerifier(path)
    assert v.catch_up(log.tip).ok
    log.append("connect", conn=5)
    real_stat = os.stat
    fired: list[bool] = []

    def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if not fired and str(target) == str(path):
            fired.append(True)  # once: after the size was read, before the rotation check
            inode = real_stat(path).st_ino
            while real_stat(path).st_ino == inode:
                log.append("connect", conn=100, exe="/usr/bin/python3")
        return real_stat(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_verify.os, "stat", stat)
    res = v.catch_up(log.tip)
    monkeypatch.undo()
    assert fired and len(list(path.parent.glob("audit.jsonl*"))) >= 2  # it did rotate
    assert res.ok, res.problems
    assert res.last_seq == log.tip[0]


def test_running_out_of_descriptors_postpones_the_check_and_is_no_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s" / "audit.jsonl"
    log = _log(path)
    for i in range(3):
        log.append("connect", conn=i)
    v = IncrementalVerifier(path)

    def no_fds(_: Path) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(audit_verify, "open_files", no_fds)
    res = v.catch_up(log.tip)
    assert res.ok and any("postponed" in w for w in res.warnings), res
    monkeypatch.undo()
    res = v.catch_up(log.tip)
    assert res.ok and res.records == 3 and not res.warnings, res

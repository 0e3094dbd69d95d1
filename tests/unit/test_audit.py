"""The audit log: hash chain, tamper detection, torn tails, rotation (pure file I/O, no daemon).

The same checks through ``aegisctl audit verify`` against a real daemon's log are in
``tests/test_cli_core.py``.
"""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegisd.auth0.tokens import token_fingerprint as fingerprint
from aegisd.daemon.audit import GENESIS, AuditLog, canonical, verify_files


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def open_log(path: Path, **kwargs: object) -> AuditLog:
    log = AuditLog(path, now=Clock(), **kwargs)  # type: ignore[arg-type]
    log.open()
    return log


@pytest.fixture
def written(log_path: Path) -> Iterator[Path]:
    """A closed log of five records: start, three requests, stop."""
    log = open_log(log_path)
    log.append("start", pid=1)
    for i in range(3):
        log.append("request", n=i, action="demo.read")
    log.append("stop", pid=1)
    log.close()
    yield log_path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in lines(path)]


# ---- writing ------------------------------------------------------------------------------


def test_records_are_chained_from_genesis(written: Path) -> None:
    recs = records(written)
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(recs):
        assert after["prev"] == before["hash"]
    result = verify_files(written)
    assert result.ok, result.problems
    assert result.records == 5
    assert result.summary() == "audit chain intact: 5 records in 1 file(s)"


def test_log_file_is_private(written: Path) -> None:
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700


def test_timestamps_come_from_the_injected_clock(written: Path) -> None:
    assert [r["ts"] for r in records(written)] == [1_700_000_001.0 + i for i in range(5)]


def test_reopening_continues_the_chain(written: Path) -> None:
    log = open_log(written)
    assert log.tip[0] == 5
    log.append("start", pid=2)
    log.close()
    assert records(written)[-1]["seq"] == 6
    assert verify_files(written).ok


def test_secret_looking_fields_are_refused_and_nothing_is_written(log_path: Path) -> None:
    log = open_log(log_path)
    for key in ("access_token", "refresh_token", "id_token", "client_secret", "password"):
        with pytest.raises(ValueError, match=key):
            log.append("credential", **{key: "value"})
    log.close()
    assert log_path.read_bytes() == b""


def test_append_before_open_fails(log_path: Path) -> None:
    with pytest.raises(RuntimeError):
        AuditLog(log_path, now=Clock()).append("x")


def test_fingerprint_names_a_token_without_revealing_it() -> None:
    fp = fingerprint("ya29.secret-token")
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 12
    assert "secret" not in fp
    assert fp == fingerprint("ya29.secret-token")
    assert fp != fingerprint("ya29.other-token")


def test_tail_returns_the_last_records(written: Path) -> None:
    log = AuditLog(written, now=Clock())
    assert [r["seq"] for r in log.tail(2)] == [4, 5]


# ---- tampering ----------------------------------------------------------------------------


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(new_lines))


def test_edited_field_is_detected_at_its_line(written: Path) -> None:
    ls = lines(written)
    rec = json.loads(ls[2])
    rec["action"] = "demo.delete"  # keep the old hash: the attacker cannot recompute it… yet
    ls[2] = canonical(rec) + b"\n"
    rewrite(written, ls)
    result = verify_files(written)
    assert not result.ok
    assert any(p.startswith("audit.jsonl:3:") and "edited" in p for p in result.problems)


def test_edited_record_with_recomputed_hash_breaks_the_next_link(written: Path) -> None:
    import hashlib

    ls = lines(written)
    rec = json.loads(ls[2])
    rec["action"] = "demo.delete"
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = hashlib.sha256(str(rec["prev"]).encode() + canonical(body)).hexdigest()
    ls[2] = canonical(rec) + b"\n"
    rewrite(written, ls)
    result = verify_files(written)
    assert not result.ok
    assert any(p.startswith("audit.jsonl:4:") and "chain broken" in p for p in result.problems)


def test_deleted_record_is_detected(written: Path) -> None:
    ls = lines(written)
    del ls[2]
    rewrite(written, ls)
    result = verify_files(written)
    assert not result.ok
    assert result.problems[0].startswith("audit.jsonl:3:")


def test_reordered_records_are_detected(written: Path) -> None:
    ls = lines(written)
    ls[1], ls[2] = ls[2], ls[1]
    rewrite(written, ls)
    result = verify_files(written)
    assert not result.ok
    assert result.problems[0].startswith("audit.jsonl:2:")


def test_forged_line_inserted_is_detected(written: Path) -> None:
    ls = lines(written)
    forged = dict(json.loads(ls[1]), event="approved")
    ls.insert(2, canonical(forged) + b"\n")
    rewrite(written, ls)
    assert not verify_files(written).ok


def test_garbage_line_in_the_middle_is_detected(written: Path) -> None:
    ls = lines(written)
    ls.insert(2, b"not json at all\n")
    rewrite(written, ls)
    result = verify_files(written)
    assert not result.ok
    assert "audit.jsonl:3: not a JSON record" in result.problems


def test_torn_last_line_is_reported(written: Path) -> None:
    data = written.read_bytes()
    written.write_bytes(data[:-40])  # the last record lost its end: a crash mid-write
    result = verify_files(written)
    assert not result.ok
    assert result.problems == ["audit.jsonl:5: torn last line (incomplete write, e.g. a crash)"]


# ---- recovery at restart --------------------------------------------------------------------


def test_torn_tail_is_acknowledged_at_reopen(written: Path) -> None:
    partial = b'{"seq":6,"ts":1,"event":"requ'  # what a kill -9 mid-write leaves
    with open(written, "ab") as f:
        f.write(partial)
    log = open_log(written)
    assert log.recovered == [f"torn last line 6 ({len(partial)} bytes) after a crash"]
    log.append("start", pid=3)
    log.close()
    result = verify_files(written)
    assert result.ok, result.problems
    assert result.warnings == ["audit.jsonl:6: torn line left by a crash, acknowledged at restart"]
    ack = json.loads(lines(written)[6])
    assert ack["event"] == "torn_tail"
    assert ack["line"] == 6 and ack["bytes"] == len(partial)
    assert ack["seq"] == 6  # the torn record never counted


def test_record_missing_only_its_newline_is_kept_at_reopen(written: Path) -> None:
    # A crash can lose just the final "\n" of a complete record. That record is intact and
    # verifies; restarting must not turn it into a broken chain.
    written.write_bytes(written.read_bytes()[:-1])
    assert verify_files(written).ok
    log = open_log(written)
    log.append("start", pid=3)
    log.close()
    result = verify_files(written)
    assert result.ok, result.problems
    assert [r["seq"] for r in records(written)] == [1, 2, 3, 4, 5, 6]


# ---- rotation -------------------------------------------------------------------------------


def fill(path: Path, n: int, **kwargs: object) -> None:
    log = open_log(path, **kwargs)
    for i in range(n):
        log.append("connect", conn=i, exe="/usr/bin/python3")
    log.close()


def test_rotation_keeps_one_verifiable_chain(log_path: Path) -> None:
    fill(log_path, 40, rotate_bytes=1000)
    files = sorted(p.name for p in log_path.parent.iterdir())
    assert len(files) > 3
    result = verify_files(log_path)
    assert result.ok, result.problems
    assert result.files == len(files)
    rotated = [records(p)[0] for p in log_path.parent.glob("audit.jsonl.*")]
    assert all(r["event"] == "rotated" for r in rotated if r["seq"] != 1)
    # 40 appended records plus one "rotated" record per rotation
    assert result.records == 40 + result.files - 1


def test_rotation_prunes_old_files_and_still_verifies(log_path: Path) -> None:
    fill(log_path, 60, rotate_bytes=600, keep=2)
    names = sorted(p.name for p in log_path.parent.iterdir())
    assert names == ["audit.anchor-key", "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"][1:]
    result = verify_files(log_path)
    assert result.ok, result.problems
    # the chain says what is gone: "N records pruned", never "intact"
    assert result.pruned > 0
    assert result.summary().startswith(f"audit chain verified, {result.pruned} records pruned")
    first = records(log_path.with_name("audit.jsonl.2"))[0]
    assert first["seq"] == result.pruned + 1


def test_rotation_keeps_every_file_by_default(log_path: Path) -> None:
    fill(log_path, 60, rotate_bytes=600)
    assert len(list(log_path.parent.glob("audit.jsonl.*"))) > 10
    result = verify_files(log_path)
    assert result.ok and result.pruned == 0


def test_a_deleted_oldest_file_without_a_prune_record_is_reported(log_path: Path) -> None:
    fill(log_path, 40, rotate_bytes=1000)
    oldest = max(log_path.parent.glob("audit.jsonl.*"), key=lambda p: int(p.suffix[1:]))
    oldest.unlink()
    result = verify_files(log_path)
    assert not result.ok
    assert "deleted without a prune record" in result.problems[0]


def test_reopen_after_rotation_continues_the_chain(log_path: Path) -> None:
    fill(log_path, 30, rotate_bytes=1000, keep=50)
    fill(log_path, 30, rotate_bytes=1000, keep=50)
    result = verify_files(log_path)
    assert result.ok, result.problems
    assert result.last_seq == result.records


def test_tampering_in_a_rotated_file_is_detected(log_path: Path) -> None:
    fill(log_path, 40, rotate_bytes=1000)
    old = log_path.with_name("audit.jsonl.2")
    ls = lines(old)
    rec = json.loads(ls[1])
    rec["exe"] = "/tmp/evil"
    ls[1] = canonical(rec) + b"\n"
    rewrite(old, ls)
    result = verify_files(log_path)
    assert not result.ok
    assert any(p.startswith("audit.jsonl.2:2:") for p in result.problems)


def test_a_deleted_rotated_file_is_detected(log_path: Path) -> None:
    fill(log_path, 40, rotate_bytes=1000)
    log_path.with_name("audit.jsonl.2").unlink()
    result = verify_files(log_path)
    assert not result.ok
    assert any(p.startswith("audit.jsonl.1:1:") for p in result.problems)

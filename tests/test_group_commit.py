"""Audit group commit: concurrent durable records share fsyncs, and none returns early."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from aegisd.daemon.audit import AuditLog, verify_files
from aegisd.daemon.audit_recorder import AuditRecorder


class CountingLog(AuditLog):
    syncs = 0

    def sync_handle(self) -> int:
        type(self).syncs += 1
        return super().sync_handle()


async def test_concurrent_records_share_fsyncs_and_wait_for_theirs(tmp_path: Path) -> None:
    log = CountingLog(tmp_path / "audit.jsonl", now=lambda: 1.0)
    log.open()
    recorder = AuditRecorder(log)
    durable_at_return: list[bool] = []

    async def one(i: int) -> None:
        await recorder("request", n=i)
        seq = i  # records are numbered 1..N in append order below
        durable_at_return.append(recorder._synced >= seq)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            for i in range(1, 51):
                n.start_soon(one, i)
                await trio.sleep(0)  # append in order 1..50
    log.close()
    assert all(durable_at_return) and len(durable_at_return) == 50
    assert 1 <= CountingLog.syncs < 50  # shared, not one per record
    assert verify_files(log.path).ok
    lines = log.path.read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == list(range(1, 51))


async def test_non_durable_records_do_not_wait_for_disk(tmp_path: Path) -> None:
    log = CountingLog(tmp_path / "audit.jsonl", now=lambda: 1.0)
    CountingLog.syncs = 0
    log.open()
    recorder = AuditRecorder(log)
    await recorder("connect", durable=False)
    assert CountingLog.syncs == 0
    await recorder("request")
    assert CountingLog.syncs == 1 and recorder._synced == 2
    log.close()

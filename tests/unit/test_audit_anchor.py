"""``aegisd.daemon.audit_anchor``: a key another account could know is never used.

The log may live in a shared (sticky) directory; a key planted there, or one others may
read, would let someone forge anchors that match a rewritten log.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aegisd.daemon.audit_anchor import Anchor, read_anchor

PLANTED = b"k" * 32  # what the attacker wrote, so knows


def _anchor_with_key(tmp_path: Path, mode: int, owner: int | None = None) -> tuple[Path, Anchor]:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    key = tmp_path / "audit.anchor-key"
    key.write_bytes(PLANTED)
    key.chmod(mode)
    if owner is not None:
        os.chown(key, owner, owner)
    anchor = Anchor(log)
    anchor.load_key()
    anchor.write(3, "ab" * 32)
    return log, anchor


def test_a_key_others_may_read_is_replaced(tmp_path: Path) -> None:
    log, anchor = _anchor_with_key(tmp_path, 0o644)
    key = (tmp_path / "audit.anchor-key").read_bytes()
    assert key != PLANTED and len(key) == 32
    assert (tmp_path / "audit.anchor-key").stat().st_mode & 0o777 == 0o600
    state = read_anchor(log)
    assert state.tip == (3, "ab" * 32) and not state.problem  # authentic with the new key
    anchor.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file of another uid")
def test_a_key_of_another_account_is_never_used(tmp_path: Path) -> None:
    _, anchor = _anchor_with_key(tmp_path, 0o600, owner=65534)
    key_file = tmp_path / "audit.anchor-key"
    assert key_file.stat().st_uid == os.geteuid()  # made anew, by the daemon's account
    assert key_file.read_bytes() != PLANTED
    anchor.close()


def test_a_fifo_in_place_of_the_key_does_not_block(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    os.mkfifo(tmp_path / "audit.anchor-key", 0o600)
    anchor = Anchor(log)
    anchor.load_key()  # returns (a new key), rather than waiting for a writer forever
    assert (tmp_path / "audit.anchor-key").is_file()
    anchor.close()

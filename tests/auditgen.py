"""Valid audit chains written directly, fast: a large log in seconds, for tests and bench.

Records are rendered from templates in the canonical form (sorted keys, no spaces), so the
hash of each is ``sha256(prev + canonical(body))`` exactly as ``aegisd.daemon.audit`` computes it;
``verify_files`` accepts the result. Files are split like rotation does: the oldest is
``audit.jsonl.N``, each later file starts with a ``rotated`` record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aegisd.daemon.audit import GENESIS

__all__ = ["write_chain"]

_PAD = "x" * 180


def write_chain(path: Path, total_bytes: int, file_bytes: int = 16 * 1024 * 1024) -> int:
    """Write about ``total_bytes`` of chained records as ``path`` and rotated files before it.

    Returns:
        The number of records written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    chunks: list[list[bytes]] = [[]]
    size = written = 0
    prev, seq = GENESIS, 0
    sha = hashlib.sha256
    while written < total_bytes:
        seq += 1
        if size >= file_bytes:
            chunks.append([])
            size = 0
            body = (
                f'{{"event":"rotated","prev":"{prev}","prev_file":"{path.name}.1",'
                f'"seq":{seq},"ts":1700000000.0}}'
            )
            digest = sha(prev.encode() + body.encode()).hexdigest()
            line = (
                f'{{"event":"rotated","hash":"{digest}","prev":"{prev}",'
                f'"prev_file":"{path.name}.1","seq":{seq},"ts":1700000000.0}}\n'
            )
        else:
            body = (
                f'{{"event":"filler","note":"{_PAD}","prev":"{prev}","seq":{seq},'
                f'"ts":1700000000.0}}'
            )
            digest = sha(prev.encode() + body.encode()).hexdigest()
            line = (
                f'{{"event":"filler","hash":"{digest}","note":"{_PAD}","prev":"{prev}",'
                f'"seq":{seq},"ts":1700000000.0}}\n'
            )
        raw = line.encode()
        chunks[-1].append(raw)
        size += len(raw)
        written += len(raw)
        prev = digest
    n = len(chunks)
    for i, lines in enumerate(chunks):
        target = path if i == n - 1 else path.with_name(f"{path.name}.{n - 1 - i}")
        target.write_bytes(b"".join(lines))
        target.chmod(0o600)
    return seq

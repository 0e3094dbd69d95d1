"""``aegisctl pending`` shows every parameter whole beside the digest (issue 13 finding 2).

The phone text may shorten long values in the middle; the person checks the push against
this listing. The daemon side here is a minimal peer speaking the real wire codec on a real
Unix socket, answering ``ListPending`` with one approval whose parameters a shortened phone
text would not show whole (filling ``PendingInfo.params`` is the broker's part).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegisd import wire
from tests.corekit import run_ctl

DIGEST = hashlib.sha256(b"delete production").hexdigest()
PARAMS = {
    "owner": "acme-platform-engineering",
    "repo": "infrastructure-terraform-production",
    "note": "look\x1b[2Jalike \u0430",  # a terminal escape and a Cyrillic 'a'
}


def _serve_one(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        reader = wire.FrameReader()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            while (body := reader.next_frame()) is not None:
                msg = wire.decode_client(body)
                if isinstance(msg, wire.Hello):
                    reply: wire.DaemonMessage = wire.Welcome(
                        protocol=wire.PROTOCOL,
                        daemon_version="test",
                        peer=wire.PeerInfo(uid=0, pid=1),
                    )
                elif isinstance(msg, wire.ListPending):
                    reply = wire.PendingList(
                        id=msg.id,
                        pending=[
                            wire.PendingInfo(
                                pending_id="ab12cd34",
                                action="github.delete_repo",
                                caller="agent",
                                binding_message=(
                                    "DELETE repo acme-plat..ngineering:infrastruc..production "
                                    f"#{DIGEST[:6]}"
                                ),
                                digest=DIGEST,
                                started_at=time.time(),
                                expires_at=time.time() + 100,
                                params=PARAMS,
                            )
                        ],
                    )
                else:
                    return
                conn.sendall(wire.encode(reply))


@pytest.fixture
def pending_socket(aeg_root: Path) -> Iterator[Path]:
    path = aeg_root / "p.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    thread = threading.Thread(target=_serve_one, args=(listener,), daemon=True)
    thread.start()
    yield path
    listener.close()


def test_pending_lists_the_parameters_whole_and_the_digest(pending_socket: Path) -> None:
    done = run_ctl(None, "pending", socket_path=pending_socket)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "infrastruc..production" in lines[0]
    assert '    owner = "acme-platform-engineering"' in lines
    assert '    repo  = "infrastructure-terraform-production"' in lines
    # hostile text is shown escaped, never sent raw to the terminal
    assert f"    note  = {json.dumps(PARAMS['note'])}" in lines and "\x1b" not in done.stdout
    assert f"    digest {DIGEST}" in lines

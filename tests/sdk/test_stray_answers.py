"""The SDK client against a daemon that answers oddly (bad input from a peer).

A second answer for an id arrives after the request it belongs to has finished: the read loop
must drop it, not crash the client's task group (which surfaced as an ``ExceptionGroup`` of
``ClosedResourceError`` when the client closed). A connection-level error ends the reading:
every later request must fail at once with it, not wait for an answer nobody will deliver.
The "daemon" is a small real server on a real Unix socket, so the client's own checks of the
daemon run as usual.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from aegisd import wire
from aegisd.client import AegisClient
from aegisd.errors import Internal


def _serve(listener: socket.socket, mode: str) -> None:
    conn, _ = listener.accept()
    with conn:
        reader = wire.FrameReader()
        while data := conn.recv(65536):
            reader.feed(data)
            while (body := reader.next_frame()) is not None:
                msg = wire.decode_client(body)
                if isinstance(msg, wire.Hello):
                    conn.sendall(
                        wire.encode(
                            wire.Welcome(
                                protocol=wire.PROTOCOL,
                                daemon_version="test",
                                peer=wire.PeerInfo(uid=os.getuid(), pid=os.getpid()),
                            )
                        )
                    )
                elif isinstance(msg, wire.Status) and mode == "end":
                    conn.sendall(wire.encode(wire.Error(code="internal", message="going away")))
                elif isinstance(msg, wire.Status):
                    report = wire.StatusReport(
                        id=msg.id,
                        daemon_version="test",
                        pid=os.getpid(),
                        uptime=1.0,
                        socket="",
                        config="",
                    )
                    conn.sendall(wire.encode(report) * 2)  # the same answer, twice


def _server(path: Path, mode: str) -> Iterator[Path]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    threading.Thread(target=_serve, args=(listener, mode), daemon=True).start()
    yield path
    listener.close()


@pytest.fixture
def doubling_socket(aeg_root: Path) -> Iterator[Path]:
    yield from _server(aeg_root / "d.sock", "double")


@pytest.fixture
def ending_socket(aeg_root: Path) -> Iterator[Path]:
    yield from _server(aeg_root / "e.sock", "end")


async def test_a_second_answer_for_a_finished_request_is_dropped(doubling_socket: Path) -> None:
    with trio.fail_after(10):
        async with AegisClient(doubling_socket) as client:
            first = await client.status()
            second = await client.status()  # the connection still works after the stray
            assert first.daemon_version == second.daemon_version == "test"
            await trio.sleep(0.05)  # let the strays arrive before the client closes


async def test_after_a_connection_error_every_request_fails_at_once(ending_socket: Path) -> None:
    with trio.fail_after(10):
        async with AegisClient(ending_socket) as client:
            with pytest.raises(Internal, match="going away"):
                await client.status()
            await trio.sleep(0.05)  # the read loop has ended
            with pytest.raises(Internal, match="going away"):
                await client.status()  # the same error, not a wait for the answer

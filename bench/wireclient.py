"""Blocking clients for benchmarks: the aegisd wire protocol and the OpenSSH agent protocol.

Both are deliberately thin (one socket, one request at a time, no threads) so that a round
trip measured through them is the server's cost plus the same small client overhead, which
is what a side-by-side ratio needs. ``AegisWire`` speaks ``aegisd.wire`` directly (no SDK);
``SshAgent`` speaks draft-miller-ssh-agent: REQUEST_IDENTITIES (11 → 12) and SIGN_REQUEST
(13 → 14).
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Self

from aegisd import wire

_U32 = struct.Struct(">I")


class _UnixClient:
    """One blocking AF_UNIX connection with a timeout; closed on exit or on a failed connect."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AegisWire(_UnixClient):
    """One connection to aegisd; ``hello()`` first."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        super().__init__(path, timeout)
        self.reader = wire.FrameReader()
        self._id = 0

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def recv(self) -> wire.DaemonMessage:
        while True:
            body = self.reader.next_frame()
            if body is not None:
                return wire.decode_daemon(body)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("aegisd closed the connection")
            self.reader.feed(data)

    def hello(self) -> wire.Welcome:
        self.sock.sendall(wire.encode(wire.Hello(client="bench")))
        msg = self.recv()
        if not isinstance(msg, wire.Welcome):
            raise ConnectionError(f"no Welcome: {msg!r}")
        return msg

    def ask(self, msg: wire.ClientMessage) -> wire.DaemonMessage:
        """Send one request; return its final answer (``Pending`` events are skipped)."""
        self.sock.sendall(wire.encode(msg))
        while True:
            answer = self.recv()
            if not isinstance(answer, wire.Pending):
                return answer

    def proxy(self, action: str, **params: str) -> wire.DaemonMessage:
        return self.ask(wire.Proxy(id=self.next_id(), action=action, params=params))

    def list_actions(self) -> wire.DaemonMessage:
        return self.ask(wire.ListActions(id=self.next_id()))

    def status(self) -> wire.DaemonMessage:
        return self.ask(wire.Status(id=self.next_id()))


def _string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


class SshAgent(_UnixClient):
    """One connection to an OpenSSH agent."""

    REQUEST_IDENTITIES = 11
    IDENTITIES_ANSWER = 12
    SIGN_REQUEST = 13
    SIGN_RESPONSE = 14

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            data = self.sock.recv(n - len(buf))
            if not data:
                raise ConnectionError("ssh-agent closed the connection")
            buf += data
        return buf

    def request(self, kind: int, payload: bytes = b"") -> tuple[int, bytes]:
        body = bytes([kind]) + payload
        self.sock.sendall(_U32.pack(len(body)) + body)
        (length,) = _U32.unpack(self._recv_exact(4))
        answer = self._recv_exact(length)
        return answer[0], answer[1:]

    def identities(self) -> list[bytes]:
        kind, data = self.request(self.REQUEST_IDENTITIES)
        if kind != self.IDENTITIES_ANSWER:
            raise ConnectionError(f"unexpected agent answer {kind}")
        (count,) = _U32.unpack_from(data)
        off, blobs = 4, []
        for _ in range(count):
            (n,) = _U32.unpack_from(data, off)
            blobs.append(data[off + 4 : off + 4 + n])
            off += 4 + n
            (n,) = _U32.unpack_from(data, off)
            off += 4 + n  # comment
        return blobs

    def sign(self, key_blob: bytes, data: bytes) -> bytes:
        kind, answer = self.request(
            self.SIGN_REQUEST, _string(key_blob) + _string(data) + b"\0\0\0\0"
        )
        if kind != self.SIGN_RESPONSE:
            raise ConnectionError(f"agent refused to sign ({kind})")
        return answer

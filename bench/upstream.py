"""A minimal, fast HTTP/1.1 upstream for proxy-mode benchmarks (loopback only).

The dev tenant's demo API runs on Starlette and Hypercorn and costs milliseconds per request;
that would hide the daemon's own cost. This server answers every request on a kept-alive
connection with the same small JSON body, one thread per connection, so its share of a
proxied round trip is tens of microseconds (``roundtrip.py`` measures it directly and reports
it). It understands only what the daemon's proxy sends: a request line, headers, and a body
announced by ``Content-Length``.

Run: ``python bench/upstream.py`` prints ``{"port": N}`` and serves until stdin closes.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

BODY = b'{"repos":["aegis-demo","scratch","old-experiments"]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


def _serve_conn(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            conn.sendall(RESPONSE)


def main() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    print(json.dumps({"port": srv.getsockname()[1]}), flush=True)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_serve_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()  # serve until the parent closes our stdin
    srv.close()


if __name__ == "__main__":
    main()

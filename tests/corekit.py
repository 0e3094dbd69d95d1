"""Helpers shared by the daemon-core tests: configs, a subprocess daemon, a raw wire client.

Everything here talks to real things: real TOML files, the real ``aegisd`` console script in a
subprocess, real Unix sockets. Paths live under a short directory in /tmp because AF_UNIX
paths are limited to 107 bytes and pytest's ``tmp_path`` can be longer than that.

Readiness is never a sleep: ``DaemonProcess`` binds a fake ``NOTIFY_SOCKET`` and waits for the
daemon's ``READY=1`` datagram (sd_notify), with a deadline, watching for an early exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aegisd import wire

BIN = Path(sys.executable).parent
AEGISD = BIN / "aegisd"
AEGISCTL = BIN / "aegisctl"
# What /proc/<pid>/exe shows for a client started with this interpreter.
CLIENT_EXE = os.path.realpath(sys.executable)
SYSTEM_PYTHON = "/usr/bin/python3"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0

# Variables that would point a child at the developer's own daemon, config or systemd.
_SCRUB = ("AEGIS_CONFIG", "AEGIS_SOCKET", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


# ---- temporary directories ----------------------------------------------------------------


@contextlib.contextmanager
def short_root() -> Iterator[Path]:
    """A private (0700) directory with a short path under /tmp, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="aeg", dir="/tmp"))
    try:
        yield root
    finally:
        # tests may have loosened or chowned things; make sure rmtree can do its job
        for dirpath, dirnames, _ in os.walk(root, followlinks=False):
            for name in dirnames:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    with contextlib.suppress(OSError):
                        os.chmod(p, 0o700)
        shutil.rmtree(root, ignore_errors=True)


# ---- configuration files ------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def toml_value(value: object) -> str:
    """Enough of TOML for our configs: scalars, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    if isinstance(value, Mapping):
        inner = ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


DEFAULT_CALLER: dict[str, object] = {"name": "tests", "exe": [CLIENT_EXE], "actions": ["demo.*"]}


def demo_action(url: str = "http://127.0.0.1:9/repos/{repo}") -> dict[str, object]:
    """An action that needs no approval: proxy GET to a loopback URL."""
    return {
        "description": "Read a demo repository",
        "approval": "none",
        "params": {"repo": "^[a-z0-9-]{1,20}$"},
        "request": {"method": "GET", "url": url, "timeout": 15.0},
    }


@dataclass(frozen=True)
class Files:
    """Where one daemon's files live."""

    root: Path
    config: Path
    socket: Path
    audit: Path
    notify: Path


def write_config(
    root: Path,
    *,
    callers: Sequence[Mapping[str, object]] | None = None,
    actions: Mapping[str, Mapping[str, object]] | None = None,
    socket_path: Path | None = None,
    audit_path: Path | None = None,
    extra: str = "",
    name: str = "aegisd.toml",
    **daemon: object,
) -> Files:
    """Write a valid daemon config under ``root``; keyword arguments go to ``[daemon]``.

    The defaults give one caller rule (``tests``: this interpreter, actions ``demo.*``) and
    one action (``demo.read``: no approval, proxy GET to a loopback URL).
    """
    sock = socket_path or root / "run" / "aegisd.sock"
    audit = audit_path or root / "state" / "audit.jsonl"
    lines = ["[daemon]", f"socket = {toml_value(sock)}", f"audit_log = {toml_value(audit)}"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in daemon.items()]
    for rule in [DEFAULT_CALLER] if callers is None else callers:
        lines += ["", "[[callers]]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in rule.items()]
    for action_name, spec in ({"demo.read": demo_action()} if actions is None else actions).items():
        lines += ["", f"[actions.{toml_key(action_name)}]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in spec.items()]
    if extra:
        lines += ["", extra]
    config = root / name
    config.write_text("\n".join(lines) + "\n")
    return Files(root, config, sock, audit, root / f"notify-{config.stem}.sock")


# ---- the audit log ------------------------------------------------------------------------


def audit_records(path: Path) -> list[dict[str, object]]:
    """Parseable records of one audit file (torn or foreign lines skipped)."""
    out: list[dict[str, object]] = []
    with contextlib.suppress(FileNotFoundError):
        for raw in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(raw)
                if isinstance(rec, dict):
                    out.append(rec)
    return out


def wait_for(
    check: Callable[[], object], *, timeout: float = IO_TIMEOUT, what: str = "condition"
) -> object:
    """Poll ``check`` until it returns something truthy (bounded; for effects with no signal)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_for_record(
    path: Path, predicate: Callable[[dict[str, object]], bool], timeout: float = IO_TIMEOUT
) -> dict[str, object]:
    def find() -> dict[str, object] | None:
        return next((r for r in audit_records(path) if predicate(r)), None)

    found = wait_for(find, timeout=timeout, what=f"an audit record in {path}")
    assert isinstance(found, dict)
    return found


# ---- a raw, blocking wire client ------------------------------------------------------------


class RawClient:
    """A blocking socket speaking the wire module directly (no SDK in between)."""

    def __init__(self, path: Path | str, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.reader = wire.FrameReader()
        self._ids = 0
        try:
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def send(self, msg: wire.ClientMessage) -> None:
        self.sock.sendall(wire.encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> wire.DaemonMessage | None:
        """The next message, or None at EOF (raises TimeoutError if nothing comes)."""
        while True:
            body = self.reader.next_frame()
            if body is not None:
                return wire.decode_daemon(body)
            data = self.sock.recv(65536)
            if not data:
                return None
            self.reader.feed(data)

    def hello(self, protocol: str = wire.PROTOCOL) -> wire.Welcome:
        self.send(wire.Hello(protocol=protocol, client="tests"))
        answer = self.recv()
        assert isinstance(answer, wire.Welcome), answer
        return answer

    def ask(self, msg: wire.ClientMessage) -> wire.DaemonMessage:
        self.send(msg)
        answer = self.recv()
        assert answer is not None, "daemon closed the connection"
        return answer

    def status(self) -> wire.StatusReport:
        answer = self.ask(wire.Status(id=self.next_id()))
        assert isinstance(answer, wire.StatusReport), answer
        return answer

    def drain(self) -> list[wire.DaemonMessage]:
        """Every message until the daemon closes the connection."""
        out: list[wire.DaemonMessage] = []
        while (msg := self.recv()) is not None:
            out.append(msg)
        return out


def status_roundtrip(path: Path | str) -> wire.StatusReport:
    """A fresh connection, the handshake and one Status: proof that the daemon serves."""
    with RawClient(path) as c:
        c.hello()
        return c.status()


def decode_stream(data: bytes) -> list[wire.DaemonMessage]:
    reader = wire.FrameReader()
    reader.feed(data)
    out: list[wire.DaemonMessage] = []
    while (body := reader.next_frame()) is not None:
        out.append(wire.decode_daemon(body))
    return out


# A client for other interpreters and other uids: stdlib only, so /usr/bin/python3 running as
# an unprivileged user can use it. argv: socket, frames (hex), frames to read, timeout, [marker…]
# Prints "CONNECT-ERROR <errno>" or "<OK|EOF|RESET|TIMEOUT> <hex of what the daemon sent>".
RAW_CLIENT_SCRIPT = r"""
import socket, struct, sys
path, frames = sys.argv[1], bytes.fromhex(sys.argv[2])
want, timeout = int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(timeout)
try:
    s.connect(path)
except OSError as e:
    print("CONNECT-ERROR", e.errno)
    sys.exit(0)
try:
    s.sendall(frames)
except OSError:
    pass
buf, how = b"", "TIMEOUT"
def complete(b):
    n = 0
    while len(b) >= 4:
        size = struct.unpack(">I", b[:4])[0]
        if len(b) < 4 + size:
            break
        b, n = b[4 + size:], n + 1
    return n
try:
    while complete(buf) < want:
        data = s.recv(65536)
        if not data:
            how = "EOF"
            break
        buf += data
    else:
        how = "OK"
except socket.timeout:
    pass
except OSError:
    how = "RESET"  # closed with our unread frames still queued on its side
print(how, buf.hex())
"""


@dataclass
class ClientRun:
    outcome: str  # OK (got the frames asked for), EOF/RESET (closed), TIMEOUT, CONNECT-ERROR
    messages: list[wire.DaemonMessage]
    errno: int | None = None

    @property
    def closed(self) -> bool:
        return self.outcome in ("EOF", "RESET")


def run_raw_client(
    socket_path: Path,
    messages: Sequence[wire.ClientMessage],
    *,
    want: int,
    python: str = sys.executable,
    prefix: Sequence[str] = (),
    marker: Sequence[str] = (),
    timeout: float = IO_TIMEOUT,
) -> ClientRun:
    """Run ``RAW_CLIENT_SCRIPT`` in its own process (own pid, exe, argv, maybe uid)."""
    frames = b"".join(wire.encode(m) for m in messages)
    argv = [*prefix, python, "-c", RAW_CLIENT_SCRIPT, str(socket_path), frames.hex(), str(want)]
    argv += [str(timeout), *marker]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout + 20, env=child_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    word, _, rest = done.stdout.strip().partition(" ")
    if word == "CONNECT-ERROR":
        return ClientRun(word, [], int(rest))
    return ClientRun(word, decode_stream(bytes.fromhex(rest)))


# ---- the daemon as a subprocess -----------------------------------------------------------


@dataclass
class DaemonProcess:
    """``aegisd --config F`` in a subprocess; ``start()`` returns once it said READY=1."""

    files: Files
    argv: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    notifications: list[str] = field(default_factory=list)
    _notify: socket.socket | None = None
    _stderr_path: Path | None = None
    _stderr_offset: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _open_notify(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.files.notify)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(os.fspath(self.files.notify))
        return os.fspath(self.files.notify)

    def launch(self) -> DaemonProcess:
        """Start the process without waiting (see ``wait_ready``)."""
        env = child_env(self.env)
        env.setdefault("NOTIFY_SOCKET", self._open_notify())
        n = len(list(self.files.root.glob("aegisd-*.stderr")))
        self._stderr_path = self.files.root / f"aegisd-{n}.stderr"
        argv = self.argv or [str(AEGISD), "--config", str(self.files.config)]
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env
            )
        return self

    def start(self) -> DaemonProcess:
        self.launch()
        self.wait_ready()
        return self

    def read_notifications(self, timeout: float) -> list[str]:
        """Datagrams that arrive within ``timeout`` seconds (appended to ``notifications``)."""
        assert self._notify is not None
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._notify], [], [], min(left, 0.05))
            if ready:
                got.append(self._notify.recv(4096).decode())
                break
        self.notifications += got
        return got

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("READY=1" in n for n in self.notifications):
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"aegisd exited with {self.proc.returncode} before READY=1:\n{self.stderr()}"
                )
            self.read_notifications(0.05)
        raise AssertionError(f"aegisd did not say READY=1 within {timeout} s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def refused(self, exit_code: int) -> str:
        """Wait for a daemon that must refuse to start; it exits ``exit_code``, one clear
        message and no traceback. Returns its stderr."""
        rc = self.wait_exit()
        err = self.stderr()
        assert rc == exit_code, err
        assert "Traceback" not in err, err
        return err

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.send_signal(signum)
        return self.wait_exit()

    def stderr(self) -> str:
        if self._stderr_path is None:
            return ""
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> None:
        """From now on, ``assert_no_crash`` looks only at what the daemon logs after this."""
        self._stderr_offset = len(self.stderr())

    def assert_no_crash(self) -> None:
        """The daemon logged no traceback and no crashed connection (since ``mark``)."""
        text = self.stderr()[self._stderr_offset :]
        assert "Traceback" not in text and "crashed" not in text, text

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self._notify is not None:
            self._notify.close()
            self._notify = None


def run_ctl(
    files: Files | None, *args: str, socket_path: Path | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``aegisctl [--config F] [--socket S] ARGS`` and capture its output."""
    argv = [str(AEGISCTL)]
    if files is not None:
        argv += ["--config", str(files.config)]
    if socket_path is not None:
        argv += ["--socket", str(socket_path)]
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=timeout, env=child_env()
    )


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))

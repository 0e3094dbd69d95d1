"""Shared harness of the SDK and shim tests: a local API, daemon configs and aegisd processes.

Everything is real and local: ``Upstream`` is an HTTP server on 127.0.0.1 (a thread in the
test process) standing in for GitHub; ``AegisdProcess`` runs the real daemon in a subprocess,
either plain ``aegisd --config`` or ``scripted_daemon.py`` (the real daemon with a scripted
approver in place of Auth0). Sockets live under short private temp dirs (``sun_path`` is
107 bytes). Helpers here are synchronous, so fixtures built on them serve trio and asyncio
tests alike.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SCRIPTED = Path(__file__).with_name("scripted_daemon.py")
VENV_BIN = Path(sys.executable).parent
OUTCOME = "^(approve|deny|expire|hang|unavailable|nocred|crash)$"
REPO = "^[A-Za-z0-9._-]{1,100}$"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(status)
        if status in (301, 302):
            self.send_header("location", "http://127.0.0.1:9/elsewhere")
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream", "test")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        path, method = self.path, self.command
        if method == "GET" and path == "/repos":
            self._answer(200, json.dumps(["aegis-demo", "scratch"]).encode())
        elif method == "GET" and path.startswith("/repos/"):
            self._answer(200, json.dumps({"name": path[len("/repos/") :]}).encode())
        elif method == "DELETE" and path.startswith("/repos/"):
            self._answer(204, b"", "text/plain")
        elif method == "POST" and path.endswith("/labels"):
            labels = json.loads(body or b"{}").get("labels", [])
            self._answer(200, json.dumps([{"name": n} for n in labels]).encode())
        elif method == "POST" and path == "/notes":
            self._answer(201, json.dumps({"received": body.decode()}).encode())
        elif path == "/text":
            self._answer(200, b"plain words", "text/plain; charset=utf-8")
        elif path == "/binary":
            self._answer(200, bytes(range(256)), "application/octet-stream")
        elif path == "/missing":
            self._answer(404, json.dumps({"message": "Not Found"}).encode())
        elif path == "/redirect":
            self._answer(302)
        else:
            self._answer(404, b"{}")

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]


class Upstream:
    """The stand-in API. ``seen`` records every request (headers included)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.seen = []
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def seen(self) -> list[Seen]:
        return self._server.seen

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def policy_toml(
    directory: Path,
    upstream: str,
    *,
    caller_exe: str | None = None,
    daemon_extra: str = "",
    with_auth0: bool = True,
    ciba_per_minute: int = 1000,
    caller_actions: tuple[str, ...] = ("t.*",),
    extra: str = "",
) -> str:
    """The test policy. Actions ``t.*`` are for the caller ``tests``; ``other.admin`` is not."""
    exe = caller_exe or os.path.realpath(sys.executable)
    auth0 = (
        """
[auth0]  # never contacted: the scripted daemon replaces the approver
issuer = "http://127.0.0.1:9/"
allow_insecure_http = true
client_id = "test-client"
user_id = "auth0|tester"
"""
        if with_auth0
        else ""
    )
    approval_actions = (
        f"""
[actions."t.delete"]
description = "Delete a repository (approval on the phone)"
approval = "ciba"
binding_message = "Delete {{repo}} {{outcome}}"
params = {{ repo = "{REPO}", outcome = "{OUTCOME}" }}
credential = {{ kind = "token_vault", connection = "github" }}
delivery = "proxy"
request = {{ method = "DELETE", url = "{upstream}/repos/{{repo}}" }}

[actions."t.token"]
description = "Hand the caller a token (approval on the phone)"
approval = "ciba"
binding_message = "Token {{outcome}}"
params = {{ outcome = "{OUTCOME}" }}
credential = {{ kind = "ciba_token" }}
delivery = "token"
"""
        if with_auth0
        else ""
    )
    return f"""
[daemon]
socket = "{directory}/run/aegisd.sock"
audit_log = "{directory}/audit.jsonl"
ciba_starts_per_minute = {ciba_per_minute}
log_level = "warning"
{daemon_extra}
{auth0}
[[callers]]
name = "operator"  # aegisctl: sees and cancels every caller's pending approvals
exe = ["{exe}"]
argv = ["*/aegisctl *"]
operator = true

[[callers]]
name = "tests"
exe = ["{exe}"]
actions = {json.dumps(list(caller_actions))}

[actions."t.read"]
description = "List repositories"
approval = "none"
request = {{ method = "GET", url = "{upstream}/repos" }}

[actions."t.get"]
description = "Show one repository"
approval = "none"
params = {{ name = "{REPO}" }}

[actions."t.get".request]
url = "{upstream}/repos/{{name}}"
response_headers = ["content-type", "x-upstream"]

[actions."t.note"]
description = "Post a note"
approval = "none"
request = {{ method = "POST", url = "{upstream}/notes", body = true }}

[actions."t.text"]
approval = "none"
request = {{ method = "GET", url = "{upstream}/text" }}

[actions."t.binary"]
approval = "none"
request = {{ method = "GET", url = "{upstream}/binary" }}

[actions."t.missing"]
approval = "none"
request = {{ method = "GET", url = "{upstream}/missing" }}

[actions."t.redirect"]
approval = "none"
request = {{ method = "GET", url = "{upstream}/redirect" }}

[actions."t.denied"]
description = "Never allowed"
approval = "deny"
{approval_actions}
[actions."other.admin"]
description = "Not for the tests caller"
approval = "none"
request = {{ method = "GET", url = "{upstream}/repos" }}
{extra}
"""


def private_dir(prefix: str = "aegsdk-") -> Path:
    """A short 0700 temp dir (socket paths must fit in 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class AegisdProcess:
    """A real aegisd in a subprocess; ``scripted`` swaps Auth0 for the scripted approver."""

    directory: Path
    config: Path
    scripted: bool = True
    delay: float = 0.2
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    issued_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.issued_file = self.directory / "issued.txt"

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "aegisd.sock"

    @property
    def audit(self) -> Path:
        return self.directory / "audit.jsonl"

    @property
    def log(self) -> Path:
        return self.directory / "aegisd.log"

    def issued(self) -> list[str]:
        if not self.issued_file.exists():
            return []
        return [t for t in self.issued_file.read_text().splitlines() if t]

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        events = []
        for line in self.audit.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line the daemon is still writing
        return events

    def start(self, timeout: float = 15.0) -> AegisdProcess:
        if self.scripted:
            cmd = [
                sys.executable,
                str(SCRIPTED),
                str(self.config),
                str(self.issued_file),
                str(self.delay),
            ]
        else:
            cmd = [str(VENV_BIN / "aegisd"), "--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        env.update(self.env_extra)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aegisd exited early:\n{self.log.read_text()}")
            if self.socket.exists() and _answers(self.socket):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"aegisd did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _answers(socket: Path) -> bool:
    from aegisd.client import BlockingAegisClient
    from aegisd.errors import AegisError

    try:
        BlockingAegisClient(socket).status()
    except AegisError:
        return False
    return True


def start_aegisd(
    upstream: Upstream,
    *,
    scripted: bool = True,
    caller_exe: str | None = None,
    daemon_extra: str = "",
    delay: float = 0.2,
    ciba_per_minute: int = 1000,
    caller_actions: tuple[str, ...] = ("t.*",),
    extra: str = "",
) -> AegisdProcess:
    """Write the test policy into a fresh private dir and start aegisd on it."""
    directory = private_dir()
    config = directory / "aegisd.toml"
    config.write_text(
        policy_toml(
            directory,
            upstream.url,
            caller_exe=caller_exe,
            daemon_extra=daemon_extra,
            with_auth0=scripted,
            ciba_per_minute=ciba_per_minute,
            caller_actions=caller_actions,
            extra=extra,
        )
    )
    try:
        return AegisdProcess(directory, config, scripted=scripted, delay=delay).start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def cleanup(process: AegisdProcess) -> None:
    process.stop()
    shutil.rmtree(process.directory, ignore_errors=True)


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll a cheap synchronous condition (for checks on another process's state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())

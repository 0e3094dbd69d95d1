"""``aegisctl doctor`` against broken and healthy set-ups: each check says fail, and how to fix.

Runs the real CLI in a subprocess; the "Auth0 tenant" is a small local HTTP server whose
discovery document and ``Date`` header each test chooses.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.corekit import AEGISCTL, DaemonProcess, Files, child_env

GOOD_DISCOVERY = {
    "backchannel_authentication_endpoint": "/bc-authorize",
    "backchannel_token_delivery_modes_supported": ["poll"],
}


class FakeTenant:
    def __init__(self) -> None:
        self.discovery: dict[str, Any] = dict(GOOD_DISCOVERY)
        self.clock_offset = 0.0
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(tenant.discovery).encode()
                self.send_response(200 if self.path.endswith("openid-configuration") else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def date_time_string(self, timestamp: float | None = None) -> str:
                import time

                return formatdate(time.time() + tenant.clock_offset, usegmt=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tenant() -> Iterator[FakeTenant]:
    t = FakeTenant()
    yield t
    t.close()


def auth0_section(port: int) -> str:
    return (
        "[auth0]\n"
        f'issuer = "http://127.0.0.1:{port}/"\n'
        "allow_insecure_http = true\n"
        'client_id = "doctor-test"\n'
        'user_id = "auth0|someone"\n'
        "\n[secrets]\n"
        'backend = "env"\n'
    )


def doctor(files: Files, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [str(AEGISCTL), "--config", str(files.config), "doctor", "--json", "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(env),
        check=False,
    )
    doc = json.loads(out.stdout)
    return out.returncode, {c["name"]: c for c in doc["checks"]}


SECRET = {"AEGIS_SECRET_AUTH0_CLIENT_SECRET": "doctor-secret-value"}


def test_healthy_setup_passes(
    write_config: Callable[..., Files],
    spawn_daemon: Callable[..., DaemonProcess],
    tenant: FakeTenant,
) -> None:
    files = write_config(extra=auth0_section(tenant.port))
    spawn_daemon(files, env=SECRET)
    code, checks = doctor(files, SECRET)
    fails = {n: c for n, c in checks.items() if c["verdict"] == "fail"}
    assert code == 0, fails
    for name in ("config", "socket-dir", "daemon", "audit", "auth0-discovery", "auth0-ciba"):
        assert checks[name]["verdict"] == "ok", checks[name]
    assert checks["clock"]["verdict"] == "ok"
    assert checks["secret:auth0_client_secret"]["verdict"] == "ok"
    # the env backend is for dev only, and doctor says so
    assert checks["secrets-backend"]["verdict"] == "warn"
    # same-uid mode (the daemon runs as this account): said plainly, with the way out
    assert checks["mode"]["verdict"] == "warn"
    assert (
        "the agent included, can read the daemon's secrets and edit its policy"
        in (checks["mode"]["detail"])
    )
    assert "sudo aegisctl service install --system" in checks["mode"]["fix"]
    assert "doctor-secret-value" not in json.dumps(checks)


def test_invalid_config_fails_with_the_key(write_config: Callable[..., Files]) -> None:
    files = write_config(extra='[actions."bad"]\napproval = "maybe"\n')
    code, checks = doctor(files)
    assert code == 1
    assert checks["config"]["verdict"] == "fail"
    assert "actions.bad.approval" in checks["config"]["detail"]


def test_daemon_not_running(write_config: Callable[..., Files]) -> None:
    files = write_config()
    code, checks = doctor(files)
    assert code == 1
    assert checks["daemon"]["verdict"] == "fail"
    assert "aegisctl service install" in checks["daemon"]["fix"]


def test_unsafe_socket_directory(write_config: Callable[..., Files]) -> None:
    files = write_config()
    files.socket.parent.mkdir(mode=0o700)
    os.chmod(files.socket.parent, 0o770)
    code, checks = doctor(files)
    assert code == 1
    assert checks["socket-dir"]["verdict"] == "fail"
    assert "chmod 700" in checks["socket-dir"]["fix"]


def test_missing_secret(write_config: Callable[..., Files], tenant: FakeTenant) -> None:
    files = write_config(extra=auth0_section(tenant.port))
    code, checks = doctor(files)
    assert code == 1
    check = checks["secret:auth0_client_secret"]
    assert check["verdict"] == "fail"
    # the env backend refuses `secrets set`: the fix must be one that works (issue 16)
    assert check["fix"] == (
        "set AEGIS_SECRET_AUTH0_CLIENT_SECRET in aegisd's environment (env backend), and restart it"
    )


def test_auth0_unreachable(write_config: Callable[..., Files]) -> None:
    files = write_config(extra=auth0_section(1))  # nothing listens on port 1
    code, checks = doctor(files, SECRET)
    assert code == 1
    assert checks["auth0-discovery"]["verdict"] == "fail"
    assert "unreachable" in checks["auth0-discovery"]["detail"]


def test_tenant_without_ciba(write_config: Callable[..., Files], tenant: FakeTenant) -> None:
    tenant.discovery = {"issuer": "x"}
    files = write_config(extra=auth0_section(tenant.port))
    code, checks = doctor(files, SECRET)
    assert code == 1
    assert checks["auth0-discovery"]["verdict"] == "ok"
    assert checks["auth0-ciba"]["verdict"] == "fail"


def test_clock_skew(write_config: Callable[..., Files], tenant: FakeTenant) -> None:
    tenant.clock_offset = 600.0
    files = write_config(extra=auth0_section(tenant.port))
    code, checks = doctor(files, SECRET)
    assert code == 1
    assert checks["clock"]["verdict"] == "fail"
    assert "600" in checks["clock"]["detail"] or "599" in checks["clock"]["detail"]


def test_broken_audit_chain(
    write_config: Callable[..., Files], spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    files = write_config()
    spawn_daemon(files).stop()
    lines = files.audit.read_text().splitlines()
    record = json.loads(lines[0])
    record["pid"] = 1  # an edit after the fact
    lines[0] = json.dumps(record)
    Path(files.audit).write_text("\n".join(lines) + "\n")
    code, checks = doctor(files)
    assert code == 1
    assert checks["audit"]["verdict"] == "fail"


def test_no_callers_warns_default_deny(write_config: Callable[..., Files]) -> None:
    files = write_config(callers=[])
    _, checks = doctor(files)
    assert checks["callers"]["verdict"] == "warn"
    assert "default deny" in checks["callers"]["detail"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a store of another account")
def test_a_store_of_the_daemon_account_gets_the_system_fix(
    write_config: Callable[..., Files], tenant: FakeTenant, aeg_root: Path
) -> None:
    """Separated mode: the store is the daemon account's, so `secrets set` must be --system."""
    import pwd

    store = aeg_root / "store"
    store.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(store, nobody.pw_uid, nobody.pw_gid)
    section = auth0_section(tenant.port).replace(
        'backend = "env"\n', f'backend = "file"\ndir = "{store}"\n'
    )
    files = write_config(extra=section)
    code, checks = doctor(files, {"AEGIS_DAEMON_USER": "nobody"})
    assert code == 1
    check = checks["secret:auth0_client_secret"]
    assert (check["verdict"], check["detail"]) == ("fail", "missing")  # root read the store
    assert check["fix"] == "sudo aegisctl secrets set --system auth0_client_secret"
    secret = store / "auth0_client_secret"
    secret.write_text("doctor-secret-value")
    os.chmod(secret, 0o600)
    os.chown(secret, nobody.pw_uid, nobody.pw_gid)
    code, checks = doctor(files, {"AEGIS_DAEMON_USER": "nobody"})
    assert checks["secret:auth0_client_secret"]["verdict"] == "ok"

"""Helpers for the proof suites: the error codes of the spec, the extra bench action, and
subprocess stacks (dev tenant process + ``aegisd`` process) with guaranteed cleanup.

The dev tenant subprocess is ``bench/tenantproc.py`` (its ``TenantProc`` parent handle), the
daemon subprocess is ``tests.corekit.DaemonProcess`` (readiness by sd_notify ``READY=1``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tenantproc import TenantProc
from tests.corekit import DaemonProcess, Files, short_root

LONG = os.environ.get("AEGIS_LONG") == "1"

# DESIGN §2, "Stable error codes", plus the client-side daemon_unavailable.
DESIGN_CODES = frozenset(
    {
        "bad_request",
        "frame_too_large",
        "unsupported_protocol",
        "peer_rejected",
        "unknown_action",
        "caller_not_allowed",
        "invalid_params",
        "policy_denied",
        "rate_limited",
        "approval_denied",
        "approval_expired",
        "approval_unavailable",
        "credential_unavailable",
        "upstream_error",
        "cancelled",
        "shutting_down",
        "internal",
        "daemon_unavailable",
    }
)

# One push per request number: distinct parameters, so nothing coalesces. The name fits the
# dev tenant config's caller rule (``demo.*``).
BENCH_ACTION = """
[actions."demo.bench"]
description = "A CIBA token per request number (proof tests)"
approval = "ciba"
binding_message = "Bench request {n}"
params = { n = "^[0-9]{1,6}$" }
credential = { kind = "ciba_token" }
delivery = "token"
"""

LIFTED_CAPS: dict[str, Any] = {
    "max_pending": 2000,
    "max_pending_per_caller": 2000,
    "ciba_starts_per_minute": 100000,
}


@dataclass
class SubStack:
    """A dev tenant process and an ``aegisd`` process configured against it."""

    root: Path
    tenant: TenantProc
    files: Files
    env: dict[str, str]
    daemon: DaemonProcess | None = None
    started: list[DaemonProcess] = field(default_factory=list)

    def start_daemon(self) -> DaemonProcess:
        """Start (or restart) ``aegisd`` on this stack's config; returns once READY=1."""
        d = DaemonProcess(self.files, env=dict(self.env))
        self.daemon = d
        self.started.append(d)
        return d.start()

    def cleanup(self) -> None:
        for d in self.started:
            d.cleanup()
        self.tenant.close()


@contextlib.contextmanager
def sub_stack(
    tenant_options: dict[str, Any] | None = None,
    *,
    daemon: dict[str, Any] | None = None,
    auth0: dict[str, Any] | None = None,
    extra: str = BENCH_ACTION,
    separate_daemon_dir: bool = True,
) -> Iterator[SubStack]:
    """A dev tenant subprocess and a daemon config for it; the daemon is started on demand.

    With ``separate_daemon_dir`` the daemon's socket and audit live under ``ROOT/d`` and the
    tenant's state under ``ROOT/t``, so a scan can tell who wrote what.
    """
    with short_root() as root:
        opts = {"interval": 1.0, "ciba_per_user_per_minute": None, **(tenant_options or {})}
        # INFO: the tenant logs one line per request (scanned by the secret-hygiene test)
        tenant = TenantProc(root / "t", opts, stderr_path=root / "tenant.stderr", log_level="INFO")
        try:
            sock = root / ("d" if separate_daemon_dir else "t") / "run" / "aegisd.sock"
            audit = root / ("d" if separate_daemon_dir else "t") / "state" / "audit.jsonl"
            sections: dict[str, dict[str, Any]] = {
                "daemon": {"socket": str(sock), "audit_log": str(audit), **(daemon or {})},
                "auth0": dict(auth0 or {}),
            }
            config = tenant.daemon_config(root / "aegisd.toml", sections=sections, extra=extra)
            files = Files(root, config, sock, audit, root / "notify.sock")
            stack = SubStack(root, tenant, files, tenant.secrets_env_vars())
        except BaseException:
            tenant.close()
            raise
        try:
            yield stack
        finally:
            stack.cleanup()


@contextlib.contextmanager
def throwaway_user(prefix: str = "aegproof") -> Iterator[tuple[int, int, str]]:
    """A system user created for the test and deleted afterwards: (uid, gid, name)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        import pytest

        pytest.skip("needs root, useradd and setpriv to run a client as another uid")
    name = f"{prefix}{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        import pwd

        pw = pwd.getpwnam(name)
        yield pw.pw_uid, pw.pw_gid, name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def setpriv_prefix(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def copied_python(directory: Path) -> str:
    """A copy of this interpreter's binary at another path (not in any caller rule)."""
    real = os.path.realpath(sys.executable)
    target = directory / "not-allowed-python"
    shutil.copy2(real, target)
    return str(target)

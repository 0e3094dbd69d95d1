"""The dev tenant in its own process, driven over a line-based JSON command channel.

Why this exists: the benchmarks and the subprocess proof tests need the dev tenant in a
process of its own (so the daemon's RSS and CPU are the daemon's), with options the
``aegisctl dev-tenant`` command line does not offer (``ciba_per_user_per_minute = None``, a
fault seed, short expiries), and with the handle's powers (approve, deny, stats, faults, key
rotation, ``issued_secrets``) that the HTTP control endpoints only partly expose
(``/_dev/`` has faults, rotate-keys and stats, but no approve-by-handle with a timestamp and no
issued-secrets listing).

Run as a script::

    python bench/tenantproc.py --state-dir DIR [--options JSON]

It writes ``DIR/aegisd.toml`` and ``DIR/secrets.env`` (as ``aegisctl dev-tenant`` does),
prints one ready line ``{"ready": true, "port": …, "issuer": …}`` on stdout, then answers one
JSON line per command line read from stdin (``{"op": "pending"}``, ``counters`` (cheap),
``pending_detail`` (ids with binding messages), ``{"op": "approve",
"ids": [...]}`` or ``{"op": "approve", "all": true}``, ``deny``, ``stats``, ``secrets``,
``faults`` with ``{"faults": {...}}``, ``rotate`` with ``keep_old``, ``stop``). EOF on stdin
stops it. Approvals answer with ``t``: ``time.monotonic()`` just after the approval took
effect; CLOCK_MONOTONIC is system-wide on Linux, so other processes can compare it with their
own ``time.monotonic()``.

``TenantProc`` is the parent side (blocking; use ``acall`` from trio code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()


# ---- child side ------------------------------------------------------------------------------


async def _serve(state_dir: Path, options: dict[str, Any]) -> None:
    import msgspec
    import trio

    from aegisd.devtenant import DevTenantOptions, UnknownRequest, serve_dev_tenant

    opts = msgspec.structs.replace(msgspec.convert(options, DevTenantOptions), state_dir=state_dir)
    out = sys.stdout

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    async with trio.open_nursery() as nursery:
        tenant = await nursery.start(serve_dev_tenant, opts)
        reply(
            {
                "ready": True,
                "pid": os.getpid(),
                "port": tenant.port,
                "issuer": tenant.issuer,
                "config": str(state_dir / "aegisd.toml"),
                "secrets_env": str(state_dir / "secrets.env"),
            }
        )
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                break
            buf += data
            stop = False
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                cmd = json.loads(line)
                op = cmd.get("op")
                try:
                    if op == "pending":
                        reply({"ok": True, "pending": [p.id for p in tenant.pending()]})
                    elif op == "pending_detail":
                        reply(
                            {
                                "ok": True,
                                "pending": [
                                    {"id": p.id, "binding_message": p.binding_message}
                                    for p in tenant.pending()
                                ],
                            }
                        )
                    elif op in ("approve", "deny"):
                        ids = [p.id for p in tenant.pending()] if cmd.get("all") else cmd["ids"]
                        done, missing = 0, 0
                        for rid in ids:
                            try:
                                (tenant.approve if op == "approve" else tenant.deny)(rid)
                                done += 1
                            except UnknownRequest:
                                missing += 1
                        reply({"ok": True, "done": done, "missing": missing, "t": time.monotonic()})
                    elif op == "counters":
                        st = tenant.stats
                        reply(
                            {
                                "ok": True,
                                "t": time.monotonic(),
                                "requests": st.requests,
                                "bc_authorize": st.bc_authorize,
                                "bc_authorize_ok": st.bc_authorize_ok,
                                "total_polls": st.total_polls,
                                "slow_downs": st.slow_downs,
                                "pending": len(tenant.pending()),
                            }
                        )
                    elif op == "stats":
                        reply({"ok": True, "stats": tenant.stats.as_dict()})
                    elif op == "secrets":
                        reply({"ok": True, "secrets": tenant.issued_secrets()})
                    elif op == "faults":
                        faults = tenant.set_faults(**cmd.get("faults", {}))
                        reply({"ok": True, "faults": msgspec.to_builtins(faults)})
                    elif op == "rotate":
                        reply({"ok": True, "kid": tenant.rotate_keys(cmd.get("keep_old"))})
                    elif op == "stop":
                        reply({"ok": True})
                        stop = True
                        break
                    else:
                        reply({"ok": False, "error": f"unknown op {op!r}"})
                except (ValueError, TypeError, KeyError) as exc:
                    reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            if stop:
                break
        tenant.stop()


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--options", default="{}", help="DevTenantOptions fields as JSON")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="devtenant %(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    import trio

    trio.run(_serve, args.state_dir.absolute(), json.loads(args.options))


# ---- parent side -----------------------------------------------------------------------------


def toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_scalar(v) for v in value) + "]"
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def edit_toml(text: str, sections: dict[str, dict[str, Any]]) -> str:
    """Set ``key = value`` lines inside existing ``[section]`` tables of a config text."""
    lines = text.splitlines()
    for section, values in sections.items():
        header = f"[{section}]"
        try:
            start = lines.index(header)
        except ValueError:
            lines += ["", header]
            start = len(lines) - 1
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines)
        )
        for key, value in values.items():
            line = f"{key} = {toml_scalar(value)}"
            for i in range(start + 1, end):
                if lines[i].split("=", 1)[0].strip() == key:
                    lines[i] = line
                    break
            else:
                lines.insert(start + 1, line)
                end += 1
    return "\n".join(lines) + "\n"


class TenantProc:
    """A dev tenant subprocess. ``with TenantProc(dir, options) as t: t.call("stats")``."""

    def __init__(
        self,
        state_dir: Path,
        options: dict[str, Any] | None = None,
        *,
        python: str = sys.executable,
        stderr_path: Path | None = None,
        log_level: str = "WARNING",
        start_timeout: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.options = dict(options or {})
        self.stderr_path = stderr_path or self.state_dir.parent / (
            self.state_dir.name + "-tenant.stderr"
        )
        self._lock = threading.Lock()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [python, str(SCRIPT), "--state-dir", str(self.state_dir)]
        argv += ["--options", json.dumps(self.options), "--log-level", log_level]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "NOTIFY_"))}
        env["PYTHONUNBUFFERED"] = "1"
        root = str(SCRIPT.parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=root,
        )
        self.ready = self._read_line(start_timeout)
        if not self.ready.get("ready"):
            self.close()
            raise RuntimeError(f"dev tenant did not start: {self.ready}")
        self.port: int = self.ready["port"]
        self.issuer: str = self.ready["issuer"]
        self.config = Path(self.ready["config"])
        self.secrets_env = Path(self.ready["secrets_env"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(
                f"dev tenant gave no answer within {timeout} s:\n{self.stderr_text()[-2000:]}"
            )
        parsed: dict[str, Any] = json.loads(result[0])
        return parsed

    def call(self, op: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return its answer (raises ``RuntimeError`` on failure)."""
        with self._lock:
            assert self.proc.stdin is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"dev tenant exited with {self.proc.returncode}")
            self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
            answer = self._read_line(timeout)
        if not answer.get("ok"):
            raise RuntimeError(f"dev tenant refused {op}: {answer.get('error')}")
        return answer

    async def acall(self, op: str, **fields: Any) -> dict[str, Any]:
        """``call`` from trio code, in a worker thread so the event loop keeps running."""
        import trio

        return await trio.to_thread.run_sync(lambda: self.call(op, **fields))

    def daemon_config(
        self,
        path: Path | None = None,
        *,
        sections: dict[str, dict[str, Any]] | None = None,
        extra: str = "",
    ) -> Path:
        """Write a copy of the tenant's ``aegisd.toml`` with keys set per section.

        ``sections={"daemon": {"max_pending": 2000}, "auth0": {"requested_expiry": 60}}``
        replaces or adds those keys; ``extra`` is appended (more actions, say).
        """
        text = edit_toml(self.config.read_text(), sections or {}) + "\n" + extra
        out = path or self.config
        out.write_text(text)
        return out

    def secrets_env_vars(self) -> dict[str, str]:
        """``AEGIS_SECRET_*`` values from ``secrets.env`` (for the daemon's ``env`` backend)."""
        pairs = (ln.split("=", 1) for ln in self.secrets_env.read_text().split() if "=" in ln)
        return dict(pairs)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the tenant (EOF, then SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> TenantProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _main()

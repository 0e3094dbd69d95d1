"""aegisd in its own process for benchmarks: start, wait until it serves, measure, profile.

``DaemonProc(config, env=...)`` runs the real ``aegisd`` console script, or with
``profile=PATH`` the same entry point under pyinstrument (``python bench/daemonproc.py
--profile PATH --config F``), which writes a text report, an HTML report and a JSON summary
of where the *busy* time went (samples inside the event loop's idle wait are set apart).
Readiness is checked by connecting and asking ``Status``; resource use comes from psutil.
For A/B experiments, ``AEGIS_BENCH_DAEMON=/path/wrapper.py`` runs that script (with
``--config F``) instead of ``aegisd``: a wrapper that patches the daemon, then calls
``aegisd.daemon.main.main()``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from aegisd import wire

SCRIPT = Path(__file__).resolve()
BIN = Path(sys.executable).parent
AEGISD = BIN / "aegisd"

# Frames that mean "the event loop is waiting for I/O", i.e. idle.
_IDLE_FUNCS = {"get_events", "poll", "select", "epoll_wait", "_epoll_wait", "wait"}
_IDLE_FILES = ("_io_epoll.py", "selectors.py", "threading.py")


def raw_status(path: Path | str, timeout: float = 2.0) -> wire.StatusReport:
    """One blocking connection: Hello, Status."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(os.fspath(path))
        s.sendall(wire.encode(wire.Hello(client="bench")) + wire.encode(wire.Status(id=1)))
        reader = wire.FrameReader()
        got: list[wire.DaemonMessage] = []
        while len(got) < 2:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            reader.feed(data)
            while (body := reader.next_frame()) is not None:
                got.append(wire.decode_daemon(body))
        report = got[1]
        if not isinstance(report, wire.StatusReport):
            raise ConnectionError(f"unexpected answer {report!r}")
        return report
    finally:
        s.close()


class DaemonProc:
    """``aegisd --config F`` as a child process."""

    def __init__(
        self,
        config: Path,
        socket_path: Path,
        *,
        env: dict[str, str] | None = None,
        profile: Path | None = None,
        stderr_path: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.config = config
        self.socket_path = socket_path
        self.profile = profile
        self.stderr_path = stderr_path or config.with_name("aegisd.stderr")
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AEGIS_CONFIG", "AEGIS_SOCKET", "NOTIFY_SOCKET", "LISTEN_FDS")
        }
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.update(env or {})
        variant = os.environ.get("AEGIS_BENCH_DAEMON")  # A/B experiments: a wrapper script
        if profile is None and variant:
            argv = [sys.executable, variant, "--config", str(config)]
        elif profile is None:
            argv = [str(AEGISD), "--config", str(config)]
        else:
            argv = [sys.executable, str(SCRIPT), "--profile", str(profile), "--config", str(config)]
        self._err = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err, env=child_env
        )
        self.ps = psutil.Process(self.proc.pid)
        self._wait_ready(start_timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aegisd exited early:\n{self.stderr_text()[-3000:]}")
            try:
                raw_status(self.socket_path)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"aegisd not serving after {timeout} s:\n{self.stderr_text()[-3000:]}")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()
        return self.proc.returncode


# ---- the profiled entry point ------------------------------------------------------------------


def busy_summary(root: Any, top: int = 25) -> dict[str, Any]:
    """Self time per function from a pyinstrument frame tree, idle wait set apart."""
    self_time: dict[str, float] = defaultdict(float)
    idle = 0.0
    total = float(root.time) if root is not None else 0.0

    def walk(frame: Any, in_idle: bool) -> None:
        nonlocal idle
        fname = frame.function or "?"
        fpath = frame.file_path_short or frame.file_path or "?"
        is_idle = in_idle or (fname in _IDLE_FUNCS and fpath.endswith(_IDLE_FILES))
        if is_idle:
            idle += frame.total_self_time
        else:
            self_time[f"{fname} ({fpath}:{frame.line_no})"] += frame.total_self_time
        for child in frame.children:
            if not child.is_synthetic:  # "[self]" frames are already in total_self_time
                walk(child, is_idle)

    if root is not None:
        walk(root, False)
    busy = max(total - idle, 1e-9)
    ranked = sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_s": round(total, 3),
        "idle_s": round(idle, 3),
        "busy_s": round(busy, 3),
        "top_self": [
            {"function": k, "self_s": round(v, 4), "share_of_busy": round(v / busy, 4)}
            for k, v in ranked
        ],
    }


def cumulative(root: Any, needles: list[str]) -> dict[str, float]:
    """Total time spent under any frame whose function or file contains each needle."""
    out = {n: 0.0 for n in needles}

    def walk(frame: Any, active: frozenset[str]) -> None:
        here = f"{frame.function} {frame.file_path_short or frame.file_path}"
        newly = {n for n in needles if n not in active and n in here}
        for n in newly:
            out[n] += float(frame.time)
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, active | newly)

    if root is not None:
        walk(root, frozenset())
    return {k: round(v, 4) for k, v in out.items()}


def _profiled_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", required=True, type=Path)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    from pyinstrument import Profiler

    from aegisd.daemon.main import cli

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    code = 0
    try:
        cli.main(["--config", args.config], standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        session = profiler.stop()
        out: Path = args.profile
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".txt").write_text(
            profiler.output_text(unicode=True, color=False, show_all=False)
        )
        out.with_suffix(".html").write_text(profiler.output_html())
        root = session.root_frame()
        summary = busy_summary(root)
        summary["cumulative"] = cumulative(
            root,
            [
                "aegisd/daemon/connection.py",
                "aegisd/daemon/broker.py",
                "aegisd/daemon/proxy.py",
                "aegisd/daemon/audit.py",
                "aegisd/daemon/peer.py",
                "aegisd/auth0/",
                "httpx",
                "httpcore",
                "msgspec",
                "to_thread",
            ],
        )
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    sys.exit(code)


if __name__ == "__main__":
    _profiled_main()

"""The whole chain for end-to-end tests: dev tenant, real ``aegisd`` process, phone answers.

``dev_stack()`` (trio) runs the dev tenant in-process (so ``issued_secrets()`` is available
for leak scans) and starts the real ``aegisd --config DIR/aegisd.toml`` that the tenant wrote,
with the ``env`` secrets from ``DIR/secrets.env``. ``cli_dev_stack()`` (synchronous, for
asyncio tests) runs the tenant as ``aegisctl dev-tenant`` instead. Approvals go through the
tenant's phone endpoints over HTTP, as the phone page does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .harness import VENV_BIN, AegisdProcess, private_dir


def read_secrets_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def tune_config(config: Path, requested_expiry: int | None) -> None:
    text = config.read_text()
    if requested_expiry is not None:
        text = re.sub(r"requested_expiry = \d+", f"requested_expiry = {requested_expiry}", text)
    text = text.replace("[daemon]\n", "[daemon]\nciba_starts_per_minute = 1000\n", 1)
    config.write_text(text)


@dataclass
class DevStack:
    port: int
    state: Path
    aegisd: AegisdProcess
    tenant: object | None = None  # the in-process DevTenant handle, when there is one

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def issued_secrets(self) -> list[str]:
        issued = getattr(self.tenant, "issued_secrets", None)
        return list(issued()) if callable(issued) else []

    async def pending(self) -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            resp = await http.get("phone/pending")
            resp.raise_for_status()
            pending: list[dict[str, object]] = resp.json()["pending"]
            return pending

    async def answer(self, binding_prefix: str, *, approve: bool = True) -> str:
        """Approve or deny the pending push whose binding message starts with the prefix."""
        import anyio

        while True:
            for req in await self.pending():
                if str(req["binding_message"]).startswith(binding_prefix):
                    verb = "approve" if approve else "deny"
                    async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
                        resp = await http.post(
                            f"phone/{verb}/{req['id']}", headers={"accept": "application/json"}
                        )
                        resp.raise_for_status()
                    return str(req["id"])
            await anyio.sleep(0.02)


def _start_aegisd(state: Path, requested_expiry: int | None) -> AegisdProcess:
    config = state / "aegisd.toml"
    tune_config(config, requested_expiry)
    env = read_secrets_env(state / "secrets.env")
    return AegisdProcess(state, config, scripted=False, env_extra=env).start()


@asynccontextmanager
async def dev_stack(
    *, interval: float = 0.1, requested_expiry: int | None = None
) -> AsyncIterator[DevStack]:
    """Dev tenant in this trio run + aegisd in a subprocess; both stopped on exit."""
    import trio

    from aegisd.devtenant import DevTenantOptions, serve_dev_tenant

    state = private_dir()
    process: AegisdProcess | None = None
    try:
        async with trio.open_nursery() as nursery:
            options = DevTenantOptions(port=0, state_dir=state, interval=interval)
            tenant = await nursery.start(serve_dev_tenant, options)
            process = await trio.to_thread.run_sync(_start_aegisd, state, requested_expiry)
            try:
                yield DevStack(tenant.port, state, process, tenant)
            finally:
                await trio.to_thread.run_sync(process.stop)
                nursery.cancel_scope.cancel()
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def cli_dev_stack(*, interval: float = 0.1) -> Iterator[DevStack]:
    """``aegisctl dev-tenant`` and ``aegisd`` as subprocesses (no event loop needed)."""
    state = private_dir()
    log = (state / "tenant.log").open("wb")
    tenant = subprocess.Popen(
        [
            str(VENV_BIN / "aegisctl"),
            "dev-tenant",
            "--port",
            "0",
            "--state-dir",
            str(state),
            "--interval",
            str(interval),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    process: AegisdProcess | None = None
    try:
        assert tenant.stdout is not None
        line = tenant.stdout.readline().decode()
        match = re.search(r"issuer=http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            raise RuntimeError(f"dev tenant did not start: {line!r}")
        process = _start_aegisd(state, None)
        yield DevStack(int(match.group(1)), state, process)
    finally:
        if process is not None:
            process.stop()
        tenant.terminate()
        try:
            tenant.wait(10)
        except subprocess.TimeoutExpired:
            tenant.kill()
            tenant.wait()
        if tenant.stdout is not None:
            tenant.stdout.close()
        log.close()
        shutil.rmtree(state, ignore_errors=True)

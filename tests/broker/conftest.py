"""A real stack for broker tests: the dev tenant over real HTTP, the Daemon on a real socket.

Both run in-process under the test's trio loop (no mocks): requests go through the SDK, the
socket, the broker, the Auth0 client, the dev tenant's HTTP endpoints and its demo API.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from aegisd.config import Config, parse_config
from aegisd.daemon.daemon import Daemon
from aegisd.devtenant import DevTenantOptions
from aegisd.devtenant.server import DevTenant, serve_dev_tenant
from aegisd.secrets import MemorySecretStore

EXTRA_ACTIONS = """
[actions."demo.issue"]
description = "Open an issue (body allowed)"
approval = "none"
params = { repo = "^[a-z-]{1,40}$" }
credential = { kind = "none" }
delivery = "proxy"
request.method = "POST"
request.url = "{base}demo-api/repos/{{repo}}/issues"
request.body = true
request.max_request_body = 64

[actions."demo.redirect"]
description = "An API that answers with a redirect"
approval = "none"
delivery = "proxy"
request = { method = "GET", url = "{base}demo-api/redirect" }

[actions."demo.forbidden"]
description = "Policy says no"
approval = "deny"
delivery = "proxy"
request = { method = "GET", url = "{base}demo-api/repos" }
"""


@dataclass
class Stack:
    tenant: DevTenant
    daemon: Daemon
    socket: Path
    directory: Path
    config: Config
    secrets: MemorySecretStore

    def audit_events(self) -> list[str]:
        import json

        lines = self.config.audit_path().read_text().splitlines()
        return [json.loads(line)["event"] for line in lines if line.strip()]

    def audit_records(self, event: str) -> list[dict[str, object]]:
        import json

        out = []
        for line in self.config.audit_path().read_text().splitlines():
            rec = json.loads(line)
            if rec["event"] == event:
                out.append(rec)
        return out


ConfigEdit = Callable[[str], str]


@pytest.fixture
async def make_stack(nursery: trio.Nursery) -> AsyncIterator[Callable[..., object]]:
    """``await make_stack(tenant_options, edit=fn)`` → ``Stack``; torn down after the test."""
    dirs: list[Path] = []
    daemons: list[Daemon] = []

    async def make(
        options: DevTenantOptions | None = None, edit: ConfigEdit | None = None
    ) -> Stack:
        directory = Path(tempfile.mkdtemp(prefix="aegb", dir="/tmp"))
        dirs.append(directory)
        opts = options or DevTenantOptions(interval=0.2)
        tenant: DevTenant = await nursery.start(serve_dev_tenant, opts)
        tenant.write_state(directory)
        text = (directory / "aegisd.toml").read_text()
        text += EXTRA_ACTIONS.replace("{base}", tenant.issuer)
        if edit is not None:
            text = edit(text)
        (directory / "aegisd.toml").write_text(text)
        config = parse_config(text, str(directory / "aegisd.toml"))
        env = dict(line.split("=", 1) for line in (directory / "secrets.env").read_text().split())
        secrets = MemorySecretStore(
            {k.removeprefix("AEGIS_SECRET_").lower(): v for k, v in env.items()}
        )
        daemon = Daemon(config, secrets=secrets)
        socket = await nursery.start(daemon.serve)
        daemons.append(daemon)
        return Stack(tenant, daemon, socket, directory, config, secrets)

    yield make
    for d in daemons:
        with trio.move_on_after(5):
            await d.stop(grace=1.0)
    nursery.cancel_scope.cancel()
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


async def wait_for_pending(tenant: DevTenant, count: int = 1, timeout: float = 10.0) -> list[str]:
    """Ids of the tenant's pending pushes once there are ``count`` of them."""
    with trio.fail_after(timeout):
        while len(tenant.pending()) < count:
            await trio.sleep(0.02)
    return [p.id for p in tenant.pending()]

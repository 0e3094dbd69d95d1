"""Every ``--json`` output against its documented schema (issue 16, item 12).

The schema's source is ``aegisctl.outputs``: decoding real output with those Structs is strict
(``forbid_unknown_fields``, real types), and ``docs/CLI.md`` must hold exactly the section
they generate. The commands run as real subprocesses against a real daemon and dev tenant
(in-process, on real sockets), with a real approval pending.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
import trio
from aegisctl.outputs import (
    OUTPUTS,
    AuditRecordOutput,
    AuditVerifyOutput,
    CancelOutput,
    DevTenantAnswerOutput,
    DoctorOutput,
    ErrorOutput,
    LockOutput,
    PendingOutput,
    SecretsStatusOutput,
    ServiceStatusOutput,
    StatusOutput,
    markdown,
)

from aegisd.client import AegisClient
from aegisd.errors import AegisError
from tests.broker.conftest import Stack, make_stack, wait_for_pending
from tests.corekit import AEGISCTL, Files, child_env, run_ctl
from tests.ops.test_service_cli import FakeManager, config, home, invoke

__all__ = ["config", "home", "make_stack"]  # fixtures, re-exported for this module

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"


def test_docs_hold_the_schema_the_structs_generate() -> None:
    text = DOCS.read_text()
    m = re.search(
        r"<!-- BEGIN GENERATED: python -m aegisctl.outputs -->\n(.*?)"
        r"<!-- END GENERATED -->",
        text,
        re.S,
    )
    assert m is not None, "docs/CLI.md lost its generated JSON section"
    assert m.group(1).strip() == markdown().strip(), "run: python -m aegisctl.outputs"
    for command in OUTPUTS:
        assert f"### `{command}`" in m.group(1)


def test_outputs_carry_every_field_the_daemon_sends() -> None:
    from aegisctl.outputs import PendingItem
    from msgspec.structs import fields

    from aegisd import wire

    def names(cls: type) -> set[str]:
        return {f.encode_name for f in fields(cls)}

    assert names(wire.PendingInfo) <= names(PendingItem)
    assert names(wire.StatusReport) - {"id", "auth0_state"} <= names(StatusOutput)


async def ctl(stack: Stack, *args: str, config: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(AEGISCTL), "--socket", str(stack.socket)]
    if config:
        argv += ["--config", stack.config.source]
    done = await trio.run_process(
        [*argv, *args], capture_stdout=True, capture_stderr=True, check=False, env=child_env()
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


async def test_commands_that_talk_to_the_daemon(make_stack: object, nursery: trio.Nursery) -> None:
    stack: Stack = await make_stack()  # type: ignore[operator]

    async def ask() -> None:
        with suppress(AegisError):
            async with AegisClient(stack.socket) as client:
                await client.proxy("demo.delete", repo="one")

    with trio.fail_after(60):
        nursery.start_soon(ask)
        await wait_for_pending(stack.tenant)
        while not stack.daemon.broker.pending():
            await trio.sleep(0.02)

        status = msgspec.json.decode(
            (await ctl(stack, "status", "--json")).stdout, type=StatusOutput
        )
        assert status.ok and status.pending == 1 and isinstance(status.uptime, float)
        # real types, not strings: e.g. the JWKS key count is a number
        assert any(isinstance(v, int) and not isinstance(v, bool) for v in status.auth0.values())
        assert status.missing_secrets == []

        done = await ctl(stack, "pending", "--json")
        pending = msgspec.json.decode(done.stdout, type=PendingOutput)
        (item,) = pending.pending
        assert item.action == "demo.delete" and item.expires_at > item.started_at

        done = await ctl(stack, "cancel", item.pending_id, "--json")
        assert done.returncode == 0, done.stderr
        assert msgspec.json.decode(done.stdout, type=CancelOutput).cancelled == item.pending_id

        done = await ctl(stack, "cancel", item.pending_id, "--json")  # gone now
        assert done.returncode == 17
        error = msgspec.json.decode(done.stdout, type=ErrorOutput).error
        assert (error.code, error.exit_code) == ("not_found", 17)

        done = await ctl(stack, "lock", "--json")
        locked = msgspec.json.decode(done.stdout, type=LockOutput)
        assert locked.ok and locked.cancelled == 0

        before = len(stack.tenant.pending())
        nursery.start_soon(ask)
        await wait_for_pending(stack.tenant, before + 1)
        port = str(urlsplit(stack.tenant.issuer).port)
        done = await ctl(stack, "dev-tenant", "approve", "--port", port, "--latest", "--json")
        answer = msgspec.json.decode(done.stdout, type=DevTenantAnswerOutput)
        assert answer.status == "approved"
        while stack.tenant.pending():  # the cancelled push is still on the phone: deny it
            done = await ctl(stack, "dev-tenant", "deny", "--port", port, "--latest", "--json")
            assert msgspec.json.decode(done.stdout, type=DevTenantAnswerOutput).status == "denied"
        done = await ctl(stack, "dev-tenant", "deny", "--port", port, "--latest", "--json")
        assert done.returncode == 17  # nothing left to deny
        assert msgspec.json.decode(done.stdout, type=ErrorOutput).error.code == "not_found"

        # audit: the daemon's own log, found by asking it (no --config given)
        done = await ctl(stack, "audit", "tail", "-n", "5", "--json")
        records = [
            msgspec.json.decode(line, type=AuditRecordOutput) for line in done.stdout.splitlines()
        ]
        assert len(records) == 5 and all(len(r.hash) >= 64 for r in records)
        done = await ctl(stack, "audit", "verify", "--json")
        verified = msgspec.json.decode(done.stdout, type=AuditVerifyOutput)
        assert verified.ok and verified.path == str(stack.config.audit_path())

        done = await ctl(stack, "secrets", "status", "--json", config=True)
        secrets = msgspec.json.decode(done.stdout, type=SecretsStatusOutput)
        assert secrets.backend == "env" and secrets.secrets["auth0_client_secret"].needed


@pytest.mark.parametrize("command", [["status"], ["pending"], ["lock"], ["cancel", "x"]])
def test_daemon_down_is_json_too(aeg_root: Path, command: list[str]) -> None:
    done = run_ctl(None, "--json", *command, socket_path=aeg_root / "none.sock")
    assert done.returncode == 3
    error = msgspec.json.decode(done.stdout, type=ErrorOutput)
    assert not error.ok and error.error.code == "daemon_unavailable"
    assert error.error.exit_code == 3


def test_doctor_json(write_config: object) -> None:
    files: Files = write_config()  # type: ignore[operator]
    done = run_ctl(files, "doctor", "--json", "--timeout", "1")
    report = msgspec.json.decode(done.stdout, type=DoctorOutput)
    assert not report.ok  # no daemon runs
    assert {c.verdict for c in report.checks} <= {"ok", "warn", "fail"}


def test_json_after_the_command_or_before_it_is_the_same(aeg_root: Path) -> None:
    sock = str(aeg_root / "none.sock")
    before = subprocess.run(
        [str(AEGISCTL), "--json", "--socket", sock, "status"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    after = subprocess.run(
        [str(AEGISCTL), "status", "--socket", sock, "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert before.returncode == after.returncode == 3
    assert before.stdout == after.stdout and sock in before.stdout


def test_service_status_json(home: Path, config: Path) -> None:
    manager = FakeManager()
    before = invoke(manager, config, "status", "--json", "--platform", "linux")
    assert before.exit_code == 1, before.output  # not installed, as without --json
    report = msgspec.json.decode(before.stdout, type=ServiceStatusOutput)
    assert not report.ok and {f.state for f in report.files} == {"not installed"}
    assert invoke(manager, config, "install", "--platform", "linux").exit_code == 0
    after = msgspec.json.decode(
        invoke(manager, config, "status", "--json", "--platform", "linux").stdout,
        type=ServiceStatusOutput,
    )
    assert after.ok and {f.state for f in after.files} == {"installed"}
    assert all(c.exit_code == 0 for c in after.commands)

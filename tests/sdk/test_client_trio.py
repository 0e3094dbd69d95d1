"""AegisClient under trio against a real aegisd process (scripted approver, real socket).

Every I/O test runs under ``trio.fail_after``. Approvals are decided by the ``outcome``
parameter of the test policy's ``t.delete``/``t.token`` actions (see ``scripted_daemon.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

import aegisd.client as client_module
from aegisd import errors, wire
from aegisd.client import (
    AegisClient,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    CallerNotAllowed,
    Cancelled,
    Credentials,
    CredentialUnavailable,
    DaemonUnavailable,
    FrameTooLarge,
    Internal,
    InvalidParams,
    NotFound,
    PeerRejected,
    PendingEvent,
    PolicyDenied,
    RateLimited,
    ShuttingDown,
    UnknownAction,
    UpstreamError,
)

from .harness import AegisdProcess, Upstream, cleanup, start_aegisd

TIMEOUT = 20


async def wait_no_pending(socket: os.PathLike[str], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        async with AegisClient(socket) as c:
            while await c.pending():
                await trio.sleep(0.02)


# ---- requests that need no approval -------------------------------------------------------


async def test_proxy_returns_the_api_answer(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            result = await c.proxy("t.read")
            assert c.peer is not None and c.peer.caller == "tests"
    assert result.status == 200
    assert result.headers == {"content-type": "application/json"}
    assert result.body == b'["aegis-demo", "scratch"]'
    assert result.text() == '["aegis-demo", "scratch"]'


async def test_proxy_params_and_body(aegisd: AegisdProcess, upstream: Upstream) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            one = await c.proxy("t.get", name="scratch")
            note = await c.proxy("t.note", body="hello")
    assert one.status == 200 and one.headers["x-upstream"] == "test"
    assert note.status == 201 and note.body == b'{"received": "hello"}'
    assert upstream.seen[-1].body == b"hello"
    assert "authorization" not in upstream.seen[-1].headers  # no credential for kind "none"


async def test_concurrent_requests_on_one_connection(aegisd: AegisdProcess) -> None:
    results: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c, trio.open_nursery() as nursery:
            for name in ("aegis-demo", "scratch", "x", "y"):

                async def one(name: str = name) -> None:
                    results.append((await c.proxy("t.get", name=name)).status)

                nursery.start_soon(one)
    assert results == [200] * 4


async def test_list_actions_and_status(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            actions = {a.name: a for a in await c.list_actions()}
            status = await c.status()
    assert "other.admin" not in actions  # not for this caller
    assert set(actions) >= {"t.read", "t.get", "t.delete", "t.token", "t.denied"}
    assert actions["t.get"].params_schema["required"] == ["name"]
    assert actions["t.token"].delivery == "token" and actions["t.delete"].approval == "ciba"
    assert actions["t.note"].body is True
    assert status.socket == str(aegisd.socket) and status.audit_ok


# ---- approvals -----------------------------------------------------------------------------


async def test_authorize_delivers_the_token_after_pending(aegisd: AegisdProcess) -> None:
    sync_events: list[PendingEvent] = []
    async_events: list[PendingEvent] = []

    async def record(event: PendingEvent) -> None:
        async_events.append(event)

    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket, on_pending=sync_events.append) as c:
            creds = await c.authorize("t.token", outcome="approve")
            again = await c.authorize("t.token", on_pending=record, outcome="approve")
    assert isinstance(creds, Credentials)
    assert creds.access_token in aegisd.issued() and again.access_token in aegisd.issued()
    assert creds.access_token != again.access_token  # single use: a fresh approval each time
    assert creds.kind == "ciba_token" and creds.token_type == "Bearer"
    assert creds.access_token not in repr(creds) and "<hidden>" in repr(creds)
    assert len(sync_events) == 1 and len(async_events) == 1  # per-call callback wins
    event = sync_events[0]
    assert event.binding_message.startswith("Token approve #")
    assert event.digest.startswith(event.binding_message.rsplit("#", 1)[1])
    assert event.expires_at > 0


async def test_proxy_with_approval_uses_the_credential_in_the_daemon(
    aegisd: AegisdProcess, upstream: Upstream
) -> None:
    pending: list[PendingEvent] = []
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            result = await c.proxy(
                "t.delete", on_pending=pending.append, repo="scratch", outcome="approve"
            )
    assert result.status == 204
    assert [p.binding_message.split(" #")[0] for p in pending] == ["Delete scratch approve"]
    seen = upstream.seen[-1]
    assert (seen.method, seen.path) == ("DELETE", "/repos/scratch")
    token = seen.headers["authorization"].removeprefix("Bearer ")
    assert token in aegisd.issued()  # the API got it; the caller never did
    assert token.encode() not in result.body


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("deny", ApprovalDenied),
        ("expire", ApprovalExpired),
        ("unavailable", ApprovalUnavailable),
        ("nocred", CredentialUnavailable),
        ("crash", Internal),
    ],
)
async def test_approval_outcomes_raise_their_class(
    aegisd: AegisdProcess, outcome: str, error: type[errors.AegisError]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            with pytest.raises(error) as info:
                await c.authorize("t.token", outcome=outcome)
            with pytest.raises(error):
                await c.proxy("t.delete", repo="r", outcome=outcome)
    assert type(info.value) is error and info.value.code == error.code
    assert "scripted crash" not in info.value.message  # internal details stay in the daemon


async def test_cancelling_the_await_withdraws_the_approval(aegisd: AegisdProcess) -> None:
    got_pending = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            with trio.CancelScope() as scope:

                def on_pending(event: PendingEvent) -> None:
                    got_pending.set()
                    scope.cancel()

                await c.authorize("t.token", on_pending=on_pending, outcome="hang")
            assert scope.cancelled_caught and got_pending.is_set()
            # the connection stays usable after a cancel
            assert (await c.proxy("t.read")).status == 200
        await wait_no_pending(aegisd.socket)
    withdrawn = [e for e in aegisd.audit_events() if e["event"] == "withdrawn"]
    assert any(e.get("action") == "t.token" for e in withdrawn)


async def test_operator_cancel_maps_to_cancelled(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c, AegisClient(aegisd.socket) as operator:

            async def cancel_when_pending(event: PendingEvent) -> None:
                for info in await operator.pending():
                    if info.digest == event.digest:
                        await operator.cancel_pending(info.pending_id)

            with pytest.raises(Cancelled):
                await c.proxy("t.delete", on_pending=cancel_when_pending, repo="c", outcome="hang")


# ---- refusals ------------------------------------------------------------------------------


async def test_policy_refusals(aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(aegisd.socket) as c:
            with pytest.raises(UnknownAction):
                await c.proxy("t.nope")
            with pytest.raises(CallerNotAllowed):
                await c.proxy("other.admin")
            with pytest.raises(InvalidParams) as bad:
                await c.proxy("t.get", name="../etc/passwd")
            assert "../etc" not in bad.value.message  # values are never echoed
            with pytest.raises(InvalidParams):
                await c.proxy("t.get")
            with pytest.raises(PolicyDenied):
                await c.proxy("t.denied")
            with pytest.raises(PolicyDenied):
                await c.authorize("t.read")  # proxy-only: its credential never leaves aegisd
            with pytest.raises(PolicyDenied):
                await c.proxy("t.token", outcome="approve")
            with pytest.raises(UpstreamError):
                await c.proxy("t.redirect")
            with pytest.raises(NotFound):  # its own code (exit 17), not a malformed message
                await c.cancel_pending("no-such-id")
            with pytest.raises(FrameTooLarge):
                await c.proxy("t.get", name="x" * 70_000)
            # none of that broke the connection
            assert (await c.proxy("t.read")).status == 200


async def test_daemon_unavailable(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nobody.sock")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(DaemonUnavailable) as info:
            async with AegisClient(missing):
                pass  # pragma: no cover
    assert "aegisd" in info.value.message and "start it" in info.value.message
    assert info.value.code == "daemon_unavailable" and info.value.exit_code == 3


@pytest.fixture
def stranger_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream, caller_exe="/nonexistent/python")
    yield process
    cleanup(process)


async def test_peer_without_a_caller_rule_is_rejected(stranger_aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(stranger_aegisd.socket) as c:
            assert (await c.status()).daemon_version  # inspection stays open
            with pytest.raises(PeerRejected):
                await c.list_actions()
            with pytest.raises(PeerRejected):
                await c.proxy("t.read")


@pytest.fixture
def limited_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream, ciba_per_minute=1)
    yield process
    cleanup(process)


async def test_rate_limited(limited_aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(limited_aegisd.socket) as c:
            await c.authorize("t.token", outcome="approve")
            with pytest.raises(RateLimited) as info:
                await c.authorize("t.token", outcome="approve")
    assert info.value.code == "rate_limited"


@pytest.fixture
def own_aegisd(upstream: Upstream) -> Iterator[AegisdProcess]:
    process = start_aegisd(upstream)
    yield process
    cleanup(process)


async def test_daemon_stopping_maps_to_shutting_down(own_aegisd: AegisdProcess) -> None:
    with trio.fail_after(TIMEOUT):
        async with AegisClient(own_aegisd.socket) as c:

            def stop(event: PendingEvent) -> None:
                assert own_aegisd.proc is not None
                own_aegisd.proc.terminate()

            with pytest.raises(ShuttingDown):
                await c.authorize("t.token", on_pending=stop, outcome="hang")
        assert own_aegisd.proc is not None
        while own_aegisd.proc.poll() is None:
            await trio.sleep(0.02)
        assert own_aegisd.proc.returncode == 0
        with pytest.raises(DaemonUnavailable):
            async with AegisClient(own_aegisd.socket):
                pass  # pragma: no cover


# ---- the module's public surface -----------------------------------------------------------


def test_every_wire_code_maps_to_its_exported_class() -> None:
    for code in [*sorted(errors.WIRE_CODES), "daemon_unavailable"]:
        exc = errors.error_for_code(code, "m", 1.5)
        assert exc.code == code and exc.message == "m" and exc.retry_after == 1.5
        assert type(exc).__name__ in client_module.__all__
        assert getattr(client_module, type(exc).__name__) is type(exc)
    assert type(errors.error_for_code("from_the_future")) is Internal


def test_all_names_exist() -> None:
    for name in client_module.__all__:
        assert hasattr(client_module, name), name


def test_every_public_definition_is_in_all() -> None:
    defined = {
        name
        for name, obj in vars(client_module).items()
        if not name.startswith("_")
        and getattr(obj, "__module__", None) == "aegisd.client"
        and callable(obj)
    }
    assert defined <= set(client_module.__all__)
    assert {"with_async_authorization", "current_credentials", "AegisClient"} <= defined


def test_import_stays_light() -> None:
    code = (
        "import sys, aegisd.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'httpx', 'httpx2', 'mcp', 'mcp_types', 'pydantic', 'trio', 'platformdirs', 'click'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wire_error_has_no_secret_fields() -> None:
    assert set(wire.Error.__struct_fields__) == {
        "code",
        "message",
        "id",
        "retry_after",
        "expires_at",
    }

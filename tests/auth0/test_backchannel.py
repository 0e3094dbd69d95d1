"""CIBA over the wire: ``start_approval`` and ``wait_approval`` against the scripted tenant.

Every test runs on trio's ``autojump_clock``: poll times below are virtual seconds since the
test began, so the expected schedules are exact.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
import trio
from trio.testing import MockClock

from aegisd.auth0.client import Auth0Client
from aegisd.auth0.rar import guardian_details
from aegisd.errors import (
    AegisError,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalUnavailable,
    RateLimited,
    UpstreamError,
)

from .conftest import ClientFactory
from .fake_auth0 import (
    APP_SECRET,
    AUDIENCE,
    ISSUER,
    USER_ID,
    FakeAuth0,
    oauth_error,
    wall,
)

BC = "/bc-authorize"
TOKEN = "/oauth/token"
MSG = "Delete repo octo:hello #a1b2c3"


def poll_times(fake: FakeAuth0, t0: float) -> list[float]:
    return [round(c.at - t0, 3) for c in fake.calls(TOKEN) if "auth_req_id" in c.form]


def no_secret(exc: AegisError) -> None:
    assert APP_SECRET not in str(exc) and APP_SECRET not in repr(exc)


async def start_and_wait(client: Auth0Client, **kw: object) -> object:
    start = await client.start_approval(binding_message=MSG)
    return await client.wait_approval(start, **kw)  # type: ignore[arg-type]


# ---- the happy path -------------------------------------------------------------------------


async def test_approval_polls_at_interval_and_verifies(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 12.0
    client = make_client()
    t0 = trio.current_time()
    polls: list[float] = []
    start = await client.start_approval(binding_message=MSG)
    assert start.interval == 5 and start.expires_in == 120
    assert start.expires_at == pytest.approx(wall() + 120)
    approval = await client.wait_approval(start, on_poll=lambda: polls.append(trio.current_time()))
    assert poll_times(fake, t0) == [5.0, 10.0, 15.0]
    assert len(polls) == 3
    assert approval.sub == USER_ID
    assert approval.id_token_claims["iss"] == ISSUER
    assert approval.latency == pytest.approx(15.0)
    assert approval.expires_at == pytest.approx(wall() + 86400)
    assert approval.refresh_token is None
    assert approval.access_token not in repr(approval)
    assert start.auth_req_id not in repr(start)
    assert fake.only_request().max_in_flight == 1


async def test_start_request_follows_the_reference(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    await make_client().start_approval(binding_message=MSG)
    form = fake.calls(BC)[0].form
    assert json.loads(form["login_hint"]) == {"format": "iss_sub", "iss": ISSUER, "sub": USER_ID}
    assert form["scope"] == "openid"
    assert form["binding_message"] == MSG
    assert form["requested_expiry"] == "120"
    assert "audience" not in form and "authorization_details" not in form


async def test_start_with_audience_offline_access_and_rar(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    details: list[dict[str, object]] = [
        {"type": "urn:auth0:schemas:authorization-details:v1:aegis", "instruction": "x"}
    ]
    client = make_client(audience=AUDIENCE, authorization_details=True)
    await client.start_approval(
        binding_message=MSG, authorization_details=details, offline_access=True
    )
    form = fake.calls(BC)[0].form
    assert form["scope"].split() == ["openid", "offline_access"]
    assert form["audience"] == AUDIENCE
    assert json.loads(form["authorization_details"]) == details


async def test_rar_is_not_sent_unless_enabled(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    await make_client().start_approval(binding_message=MSG, authorization_details=[{"type": "x"}])
    assert "authorization_details" not in fake.calls(BC)[0].form


@pytest.mark.parametrize("omit", [False, True], ids=["with-id-token", "without-id-token"])
async def test_rar_approval_with_or_without_an_id_token(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0, omit: bool
) -> None:
    fake.auto_decision, fake.rar_omits_id_token = "approve", omit
    details = guardian_details(
        action="a.b", binding_message=MSG, caller="c", exe="/bin/x", pid=7, params={"p": "v"}
    )
    client = make_client(audience=AUDIENCE, authorization_details=True)
    start = await client.start_approval(binding_message=MSG, authorization_details=details)
    approval = await client.wait_approval(start)
    assert approval.sub == USER_ID  # verified from the ID token, or the addressed approver
    assert approval.id_token_verified is not omit
    assert approval.authorization_details == details
    assert (approval.id_token_claims == {}) is omit


async def test_approval_without_an_id_token_is_refused_without_rar(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision = "approve"
    fake.id_token_factory = lambda claims: ""  # Auth0 sent none
    with pytest.raises(UpstreamError, match="id_token"):
        await start_and_wait(make_client())


async def test_email_channel_allows_a_longer_requested_expiry(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.email_channel = True
    await make_client(requested_expiry=3600, email_channel=True).start_approval(binding_message=MSG)
    assert fake.calls(BC)[0].form["requested_expiry"] == "3600"


async def test_missing_interval_means_five_seconds(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.interval = None
    fake.auto_decision, fake.auto_after = "approve", 11.0
    t0 = trio.current_time()
    await start_and_wait(make_client())
    assert poll_times(fake, t0) == [5.0, 10.0, 15.0]


async def test_polls_never_overlap_even_when_auth0_is_slow(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.poll_latency = 4.0
    fake.auto_decision, fake.auto_after = "approve", 30.0
    t0 = trio.current_time()
    await start_and_wait(make_client())
    req = fake.only_request()
    assert req.max_in_flight == 1
    times = poll_times(fake, t0)
    # each poll starts one interval after the previous answer (sent + 4 s latency)
    assert all(b - a == pytest.approx(9.0) for a, b in itertools.pairwise(times))


async def test_poll_count_over_a_full_expiry(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    t0 = trio.current_time()
    with pytest.raises(ApprovalExpired):
        await start_and_wait(make_client(requested_expiry=120))
    times = poll_times(fake, t0)
    assert len(times) == 23  # expiry / interval = 24, within 10 %
    assert times[-1] == 115.0  # nothing at or after the deadline
    assert trio.current_time() - t0 == pytest.approx(120.0)


async def test_slow_down_grows_the_interval_for_good(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 50.0
    slow = {"error": "slow_down", "error_description": "You are polling faster than allowed."}
    fake.fail_next(
        TOKEN,
        httpx.Response(400, json={**slow, "interval": 10}, headers={"Retry-After": "10"}),
        httpx.Response(400, json=slow),  # neither Retry-After nor interval: old + 5
    )
    t0 = trio.current_time()
    await start_and_wait(make_client())
    times = poll_times(fake, t0)
    # 5: slow_down -> 10 s; 15: slow_down -> 15 s; then every 15 s
    assert times == [5.0, 15.0, 30.0, 45.0, 60.0]


async def test_slow_down_with_429_status_is_read_by_its_error_field(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 20.0
    fake.fail_next(
        TOKEN, httpx.Response(429, json={"error": "slow_down"}, headers={"Retry-After": "20"})
    )
    t0 = trio.current_time()
    await start_and_wait(make_client())
    assert poll_times(fake, t0) == [5.0, 25.0]


async def test_poll_429_too_many_requests_backs_off(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 1.0
    fake.fail_next(TOKEN, oauth_error(429, "too_many_requests", **{"Retry-After": "30"}))
    t0 = trio.current_time()
    await start_and_wait(make_client())
    assert poll_times(fake, t0) == [5.0, 35.0]


async def test_fake_never_had_to_slow_us_down(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 60.0
    await start_and_wait(make_client())
    assert fake.only_request().interval == 5  # the fake grows it on every early poll


# ---- endings --------------------------------------------------------------------------------


async def test_denial(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "deny", 7.0
    t0 = trio.current_time()
    with pytest.raises(ApprovalDenied):
        await start_and_wait(make_client())
    assert poll_times(fake, t0) == [5.0, 10.0]


async def test_expiry_is_told_apart_from_denial(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    """A poll still in flight at the deadline is abandoned: the outcome is expiry."""
    fake.poll_latency = 4.0  # the poll sent at 23 s would answer at 27 s, after 25 s
    t0 = trio.current_time()
    with pytest.raises(ApprovalExpired):
        await start_and_wait(make_client(requested_expiry=25))
    assert poll_times(fake, t0) == [5.0, 14.0, 23.0]
    assert trio.current_time() - t0 == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (oauth_error(400, "expired_token"), ApprovalExpired),
        (oauth_error(400, "invalid_grant"), ApprovalUnavailable),
        (oauth_error(401, "invalid_client"), ApprovalUnavailable),
        (oauth_error(403, "unauthorized_client"), ApprovalUnavailable),
        (httpx.Response(200, json={"access_token": "x", "expires_in": 60}), UpstreamError),
        (httpx.Response(200, text="<html>"), UpstreamError),
        (httpx.Response(400, json={"no": "error field"}), UpstreamError),
    ],
    ids=[
        "expired_token",
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "no-id-token",
        "html",
        "no-error-field",
    ],
)
async def test_terminal_poll_answers(
    autojump_clock: MockClock,
    make_client: ClientFactory,
    fake: FakeAuth0,
    answer: httpx.Response,
    error: type[AegisError],
) -> None:
    fake.fail_next(TOKEN, answer)
    with pytest.raises(error) as exc_info:
        await start_and_wait(make_client())
    assert len(poll_times(fake, 0)) == 1
    no_secret(exc_info.value)


@pytest.mark.parametrize(
    "trouble",
    [httpx.Response(503), httpx.ConnectError("down"), httpx.ReadError("reset")],
    ids=["503", "connect", "read"],
)
async def test_poll_trouble_is_retried_at_the_next_interval(
    autojump_clock: MockClock,
    make_client: ClientFactory,
    fake: FakeAuth0,
    trouble: httpx.Response | Exception,
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 1.0
    fake.fail_next(TOKEN, trouble)
    t0 = trio.current_time()
    await start_and_wait(make_client())
    assert [round(c.at - t0, 3) for c in fake.calls(TOKEN)] == [5.0, 10.0]


async def test_forged_id_token_means_no_approval(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision = "approve"
    fake.id_token_factory = lambda claims: fake.sign({**claims, "sub": "auth0|mallory"})
    with pytest.raises(UpstreamError, match="sub"):
        await start_and_wait(make_client())


# ---- cancellation ---------------------------------------------------------------------------


async def test_cancellation_stops_polling_at_once(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()
    t0 = trio.current_time()
    start = await client.start_approval(binding_message=MSG)
    with trio.move_on_after(12):
        await client.wait_approval(start)
    await trio.sleep(100)
    assert poll_times(fake, t0) == [5.0, 10.0]


async def test_cancellation_during_a_poll_abandons_it(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.poll_latency = 4.0
    client = make_client()
    t0 = trio.current_time()
    start = await client.start_approval(binding_message=MSG)
    with trio.move_on_after(7):  # the first poll (sent at 5) is still in flight
        await client.wait_approval(start)
    assert trio.current_time() - t0 == pytest.approx(7.0)
    await trio.sleep(100)
    assert poll_times(fake, t0) == [5.0]
    assert client.state()["ciba_waiting"] == 0


# ---- /bc-authorize discipline ---------------------------------------------------------------


async def test_bc_authorize_is_not_retried_after_a_5xx(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, httpx.Response(503, json={"error": "server_error"}))
    with pytest.raises(ApprovalUnavailable, match="ignored") as exc_info:
        await make_client().start_approval(binding_message=MSG)
    assert fake.counts[BC] == 1
    no_secret(exc_info.value)


async def test_bc_authorize_is_not_retried_after_a_timeout(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        raise AssertionError

    fake.fail_next(BC, hang)
    with pytest.raises(ApprovalUnavailable, match="timed out"):
        await make_client().start_approval(binding_message=MSG)
    assert fake.counts[BC] == 1


async def test_bc_authorize_is_retried_once_after_a_connect_failure(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, httpx.ConnectError("refused"))
    start = await make_client().start_approval(binding_message=MSG)
    assert fake.counts[BC] == 2
    assert start.auth_req_id in fake.requests


async def test_bc_authorize_gives_up_after_the_second_connect_failure(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    with pytest.raises(ApprovalUnavailable, match="cannot connect") as exc_info:
        await make_client().start_approval(binding_message=MSG)
    assert "ignored" not in str(exc_info.value)  # certainly not sent: no stray push
    assert fake.counts[BC] == 2


async def test_bc_authorize_429_is_reported_not_waited(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, oauth_error(429, "too_many_requests", **{"Retry-After": "42"}))
    t0 = trio.current_time()
    with pytest.raises(RateLimited) as exc_info:
        await make_client().start_approval(binding_message=MSG)
    assert exc_info.value.retry_after == 42
    assert trio.current_time() == t0
    assert fake.counts[BC] == 1


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"user_id": "auth0|nobody"}, "user_id"),
        ({"client_id": "wrong-client"}, "client authentication"),
    ],
)
async def test_bc_authorize_refusals_say_what_to_check(
    autojump_clock: MockClock,
    make_client: ClientFactory,
    fake: FakeAuth0,
    over: dict[str, object],
    match: str,
) -> None:
    with pytest.raises(ApprovalUnavailable, match=match) as exc_info:
        await make_client(**over).start_approval(binding_message=MSG)
    no_secret(exc_info.value)


async def test_invalid_request_mentions_guardian(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, oauth_error(400, "invalid_request", "User has no push " + APP_SECRET))
    with pytest.raises(ApprovalUnavailable, match="Guardian") as exc_info:
        await make_client().start_approval(binding_message=MSG)
    no_secret(exc_info.value)  # error_description is never echoed


@pytest.mark.parametrize("message", ["", "x" * 65, "Pay $5 #abcdef", "Ünïcode #abcdef"])
async def test_invalid_binding_message_is_refused_before_any_request(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0, message: str
) -> None:
    with pytest.raises(ApprovalUnavailable, match="binding message"):
        await make_client().start_approval(binding_message=message)
    assert fake.recorded == []


async def test_start_answer_without_auth_req_id_is_upstream_error(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.fail_next(BC, httpx.Response(200, json={"expires_in": 300, "interval": 5}))
    with pytest.raises(UpstreamError, match="auth_req_id"):
        await make_client().start_approval(binding_message=MSG)


async def test_unreachable_auth0_at_start_is_approval_unavailable(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    down = httpx.ConnectError("down")
    fake.fail_next("/.well-known/openid-configuration", down, down, down)
    client = make_client()
    with pytest.raises(ApprovalUnavailable, match="cannot connect"):
        await client.start_approval(binding_message=MSG)
    state = client.state()
    assert state["discovery"] == "error"
    assert fake.counts[BC] == 0


async def test_private_key_jwt_flow(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.auto_decision, fake.auto_after = "approve", 6.0
    await start_and_wait(make_client(client_auth="private_key_jwt"))
    assert len(fake.seen_jti) == 3  # start + two polls, each with a fresh assertion

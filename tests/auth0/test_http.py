"""The HTTP seam: issuer rules, discovery, client authentication, retries, limits, state."""

from __future__ import annotations

import base64
import itertools
import json

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from aegisd.auth0.http import (
    MAX_BODY_BYTES,
    Auth0Http,
    Auth0Unreachable,
    ClientIdentity,
    DiscoveryError,
    issuer_from_config,
)
from aegisd.config import Auth0Config
from aegisd.errors import ConfigError, RateLimited, SecretsUnavailable, UpstreamError
from aegisd.secrets import MemorySecretStore

from .conftest import make_config
from .fake_auth0 import (
    APP_ID,
    APP_SECRET,
    ISSUER,
    MGMT_SECRET,
    FakeAuth0,
    public_pem,
    wall,
)

DISCOVERY = "/.well-known/openid-configuration"
TOKEN = "/oauth/token"
APP = ClientIdentity(APP_ID, "client_secret_post", "auth0_client_secret", "application")


def seam(http: httpx.AsyncClient, secrets: MemorySecretStore, **over: object) -> Auth0Http:
    return Auth0Http(make_config(**over), secrets, http, now=wall)


def no_secret_in(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    assert APP_SECRET not in text and MGMT_SECRET not in text


# ---- issuer ---------------------------------------------------------------------------------


def test_issuer_from_domain_has_trailing_slash() -> None:
    assert issuer_from_config(make_config()) == ISSUER


def test_explicit_issuer_gets_trailing_slash() -> None:
    cfg = make_config(domain=None, issuer="https://login.example.org")
    assert issuer_from_config(cfg) == "https://login.example.org/"


@pytest.mark.parametrize(
    ("issuer", "insecure", "ok"),
    [
        ("http://127.0.0.1:8765/", True, True),
        ("http://[::1]:8765/", True, True),
        ("http://localhost:8765/", True, True),
        ("http://127.0.0.1:8765/", False, False),
        ("http://192.168.1.10:8765/", True, False),
        ("http://tenant.example.com/", True, False),
        ("ftp://tenant.example.com/", True, False),
    ],
)
def test_plain_http_only_for_loopback_with_opt_in(issuer: str, insecure: bool, ok: bool) -> None:
    cfg = make_config(domain=None, issuer=issuer, allow_insecure_http=insecure)
    if ok:
        assert issuer_from_config(cfg).startswith("http://")
    else:
        with pytest.raises(ConfigError):
            issuer_from_config(cfg)


@pytest.mark.parametrize("domain", ["https://tenant.example.com", "tenant.example.com/x", ""])
def test_domain_must_be_a_host(domain: str) -> None:
    with pytest.raises(ConfigError):
        issuer_from_config(make_config(domain=domain))


async def test_construction_does_no_io(http: httpx.AsyncClient, fake: FakeAuth0) -> None:
    seam(http, MemorySecretStore())
    assert fake.recorded == []


# ---- discovery ------------------------------------------------------------------------------


async def test_discovery_is_fetched_once_and_cached(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    s = seam(http, secrets)
    assert s.state()["discovery"] == "not fetched yet"
    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(s.endpoints)
    ep = await s.endpoints()
    assert ep.bc_authorize == f"{ISSUER}bc-authorize"
    assert ep.token == f"{ISSUER}oauth/token"
    assert fake.counts[DISCOVERY] == 1
    assert s.state()["discovery"] == "ok"


async def test_failed_discovery_is_retried_later(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    down = httpx.ConnectError("refused")
    fake.fail_next(DISCOVERY, down, down, down)
    s = seam(http, secrets)
    with pytest.raises(Auth0Unreachable):
        await s.endpoints()
    assert fake.counts[DISCOVERY] == 3  # the first try and two retries
    state = s.state()
    assert state["discovery"] == "error"
    assert "cannot connect" in str(state["discovery_error"])
    await s.endpoints()  # Auth0 is back: the next caller discovers
    assert s.state()["discovery"] == "ok"


async def test_callers_waiting_on_a_failed_discovery_share_its_error(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(DISCOVERY, *[httpx.ConnectError("refused")] * 30)
    s = seam(http, secrets)
    errors: list[Auth0Unreachable] = []

    async def one() -> None:
        try:
            await s.endpoints()
        except Auth0Unreachable as exc:
            errors.append(exc)

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(one)
    assert len(errors) == 10
    assert fake.counts[DISCOVERY] == 3  # one caller's attempts, not ten callers' in a row


async def test_exception_groups_from_the_transport_are_translated(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    group = ExceptionGroup("happy eyeballs", [httpx.ConnectError("refused")])
    fake.fail_next(DISCOVERY, group, group, group)
    with pytest.raises(Auth0Unreachable, match="cannot connect"):
        await seam(http, secrets).endpoints()
    assert fake.counts[DISCOVERY] == 3


async def test_discovery_without_ciba_poll_mode_fails_clearly(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.discovery_overrides["backchannel_token_delivery_modes_supported"] = ["ping"]
    with pytest.raises(DiscoveryError, match="poll"):
        await seam(http, secrets).endpoints()
    fake.discovery_overrides["backchannel_token_delivery_modes_supported"] = None
    with pytest.raises(DiscoveryError, match="poll"):
        await seam(http, secrets).endpoints()


async def test_discovery_without_backchannel_endpoint_fails(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.discovery_overrides["backchannel_authentication_endpoint"] = None
    with pytest.raises(DiscoveryError, match="CIBA"):
        await seam(http, secrets).endpoints()


async def test_discovery_issuer_must_match_exactly(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.discovery_overrides["issuer"] = ISSUER.rstrip("/")
    with pytest.raises(DiscoveryError, match="issuer"):
        await seam(http, secrets).endpoints()


async def test_discovery_endpoint_on_other_host_is_refused(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.discovery_overrides["token_endpoint"] = "https://evil.example/oauth/token"
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        await seam(http, secrets).endpoints()


async def test_discovery_must_offer_the_configured_client_auth(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.discovery_overrides["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
    with pytest.raises(DiscoveryError, match="client_secret_basic"):
        await seam(http, secrets, client_auth="client_secret_basic").endpoints()


# ---- client authentication ------------------------------------------------------------------


async def test_client_secret_post(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    s = seam(http, secrets)
    await s.send("POST", f"{ISSUER}oauth/token", what="t", retry="none", form={}, identity=APP)
    sent = fake.calls(TOKEN)[0]
    assert sent.form["client_id"] == APP_ID
    assert sent.form["client_secret"] == APP_SECRET
    assert "authorization" not in sent.headers


async def test_client_secret_basic(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    s = seam(http, secrets)
    ident = ClientIdentity(APP_ID, "client_secret_basic", "auth0_client_secret", "app")
    reply = await s.send(
        "POST", f"{ISSUER}oauth/token", what="t", retry="none", form={}, identity=ident
    )
    assert reply.error == "unsupported_grant_type"  # authenticated, then the grant was judged
    sent = fake.calls(TOKEN)[0]
    assert "client_secret" not in sent.form
    assert "client_id" not in sent.form  # RFC 6749 §2.3.1: the header carries it
    user, _, password = base64.b64decode(sent.headers["authorization"][6:]).decode().partition(":")
    assert (user, password) == (APP_ID, APP_SECRET)


async def test_private_key_jwt_assertion(
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
    client_key: RSAPrivateKey,
) -> None:
    s = seam(http, secrets, client_auth="private_key_jwt", signing_alg="PS256")
    ident = ClientIdentity(APP_ID, "private_key_jwt", "auth0_client_secret", "app")
    for _ in range(2):
        reply = await s.send(
            "POST", f"{ISSUER}oauth/token", what="t", retry="none", form={}, identity=ident
        )
        assert reply.error == "unsupported_grant_type"
    first, second = (c.form["client_assertion"] for c in fake.calls(TOKEN))
    claims = jwt.decode(
        first,
        public_pem(client_key),
        algorithms=["PS256"],
        audience=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == APP_ID
    assert claims["aud"] == ISSUER  # trailing slash
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(first)["alg"] == "PS256"
    assert claims["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]
    assert "client_secret" not in fake.calls(TOKEN)[0].form


async def test_unusable_private_key_is_a_secrets_problem_without_the_key(
    http: httpx.AsyncClient,
) -> None:
    store = MemorySecretStore({"auth0_private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"})
    s = seam(http, store, client_auth="private_key_jwt")
    ident = ClientIdentity(APP_ID, "private_key_jwt", "auth0_client_secret", "app")
    with pytest.raises(SecretsUnavailable) as exc_info:
        await s.send("POST", f"{ISSUER}oauth/token", what="t", retry="none", identity=ident)
    assert "nope" not in str(exc_info.value)


async def test_missing_secret_is_reported(http: httpx.AsyncClient) -> None:
    s = seam(http, MemorySecretStore())
    with pytest.raises(SecretsUnavailable, match="auth0_client_secret"):
        await s.send("POST", f"{ISSUER}oauth/token", what="t", retry="none", identity=APP)


# ---- retries and limits ---------------------------------------------------------------------


async def test_idempotent_call_retries_5xx_with_backoff(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(DISCOVERY, httpx.Response(503), httpx.Response(502))
    s = seam(http, secrets)
    await s.endpoints()
    times = [c.at for c in fake.calls(DISCOVERY)]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.25 <= gaps[0] <= 0.5 and 0.5 <= gaps[1] <= 1.0  # exponential, jittered


async def test_idempotent_call_gives_up_after_three_attempts(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(DISCOVERY, *[httpx.Response(500)] * 5)
    with pytest.raises(Auth0Unreachable, match="HTTP 500") as exc_info:
        await seam(http, secrets).endpoints()
    assert fake.counts[DISCOVERY] == 3
    assert exc_info.value.code == "upstream_error"


async def test_no_retry_mode_sends_once(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(TOKEN, httpx.Response(503))
    with pytest.raises(Auth0Unreachable):
        await seam(http, secrets).send(
            "POST", f"{ISSUER}oauth/token", what="t", retry="none", identity=APP
        )
    assert fake.counts[TOKEN] == 1


async def test_slow_answer_times_out_on_trio_clock(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        raise AssertionError("unreachable")

    fake.fail_next(DISCOVERY, hang, hang, hang)
    start = trio.current_time()
    with pytest.raises(Auth0Unreachable, match="timed out"):
        await seam(http, secrets, http_timeout=2.0).endpoints()
    assert trio.current_time() - start < 3 * 2.0 + 4  # three timeouts plus backoff


async def test_429_waits_for_retry_after(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(
        DISCOVERY,
        httpx.Response(429, json={"error": "too_many_requests"}, headers={"Retry-After": "7"}),
    )
    await seam(http, secrets).endpoints()
    first, second = (c.at for c in fake.calls(DISCOVERY))
    assert 7.0 <= second - first <= 7.5


async def test_429_waits_for_x_ratelimit_reset(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    async def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"error": "too_many_requests"},
            headers={"x-ratelimit-reset": str(int(wall()) + 12)},
        )

    fake.fail_next(DISCOVERY, limited)
    await seam(http, secrets).endpoints()
    first, second = (c.at for c in fake.calls(DISCOVERY))
    assert 11.0 <= second - first <= 12.5


async def test_429_with_a_long_wait_becomes_rate_limited(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(DISCOVERY, httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as exc_info:
        await seam(http, secrets).endpoints()
    assert exc_info.value.retry_after == 3600
    assert fake.counts[DISCOVERY] == 1


async def test_429_raise_mode_does_not_wait(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(TOKEN, httpx.Response(429, headers={"Retry-After": "3"}))
    start = trio.current_time()
    with pytest.raises(RateLimited) as exc_info:
        await seam(http, secrets).send(
            "POST",
            f"{ISSUER}oauth/token",
            what="t",
            retry="idempotent",
            on_429="raise",
            identity=APP,
        )
    assert exc_info.value.retry_after == 3
    assert trio.current_time() == start


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(404, text="Not Found"),
        httpx.Response(200, content=b"{" + b" " * MAX_BODY_BYTES + b"}"),
        httpx.Response(
            200,
            content=b'{"a":"' + b"x" * MAX_BODY_BYTES + b'"}',
            headers={"content-length": "1"},  # a lying length is caught while reading
        ),
    ],
    ids=["html", "array", "404-text", "oversize", "oversize-lying-length"],
)
async def test_unusable_answers_are_upstream_errors(
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
    response: httpx.Response,
) -> None:
    fake.fail_next(DISCOVERY, response)
    s = seam(http, secrets)
    with pytest.raises(UpstreamError) as exc_info:
        await s.endpoints()
    assert not isinstance(exc_info.value, Auth0Unreachable)
    assert fake.counts[DISCOVERY] == 1  # not retried: the answer will not get better
    assert s.state()["last_error"] == exc_info.value.message
    no_secret_in(exc_info.value)


async def test_answers_with_oauth_errors_are_returned(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    reply = await seam(http, secrets).send(
        "POST",
        f"{ISSUER}oauth/token",
        what="t",
        retry="idempotent",
        form={"grant_type": "nope"},
        identity=APP,
    )
    assert (reply.status, reply.error) == (400, "unsupported_grant_type")
    assert "error" not in repr(reply)  # the body stays out of repr


async def test_error_codes_from_auth0_are_only_shown_when_safe(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.fail_next(TOKEN, httpx.Response(400, json={"error": "bad <script> & " + APP_SECRET}))
    reply = await seam(http, secrets).send(
        "POST", f"{ISSUER}oauth/token", what="t", retry="none", identity=APP
    )
    assert reply.error is None


async def test_state_never_holds_secrets(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0, autojump_clock: object
) -> None:
    fake.fail_next(TOKEN, httpx.ConnectError("boom " + APP_SECRET))
    s = seam(http, secrets)
    with pytest.raises(Auth0Unreachable) as exc_info:
        await s.send("POST", f"{ISSUER}oauth/token", what="t", retry="none", identity=APP)
    no_secret_in(exc_info.value)
    assert exc_info.value.__cause__ is None and exc_info.value.__suppress_context__
    assert APP_SECRET not in json.dumps(s.state())


def test_config_type_is_the_shared_one() -> None:
    assert isinstance(make_config(), Auth0Config)

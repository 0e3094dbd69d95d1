"""ID-token checks and the JWKS cache: forged tokens are refused, rotation is followed."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from trio.testing import MockClock

from aegisd.auth0.http import Auth0Http
from aegisd.auth0.idtoken import IdTokenRejected, IdTokenVerifier, JwksCache
from aegisd.errors import UpstreamError
from aegisd.secrets import MemorySecretStore

from .conftest import make_config
from .fake_auth0 import (
    APP_ID,
    ISSUER,
    FakeAuth0,
    hs256_token,
    new_key,
    public_pem,
    unsigned_token,
    wall,
)

JWKS = "/.well-known/jwks.json"


def build(
    http: httpx.AsyncClient, secrets: MemorySecretStore, **over: object
) -> tuple[IdTokenVerifier, JwksCache]:
    cfg = make_config(**over)
    seam = Auth0Http(cfg, secrets, http, now=wall)
    jwks = JwksCache(seam)
    return IdTokenVerifier(cfg, jwks, seam.issuer, now=wall), jwks


@pytest.fixture
def other_key() -> RSAPrivateKey:
    return new_key()


async def test_genuine_token_is_accepted_and_jwks_fetched_lazily(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    verifier, jwks = build(http, secrets)
    assert fake.counts[JWKS] == 0
    claims = await verifier.verify(fake.sign(fake.id_claims()))
    assert claims["sub"] == fake.id_claims()["sub"]
    await verifier.verify(fake.sign(fake.id_claims()))
    assert fake.counts[JWKS] == 1
    assert jwks.state()["jwks_keys"] == 1


Forgery = Callable[[FakeAuth0, RSAPrivateKey, RSAPrivateKey], str]

FORGERIES: dict[str, tuple[Forgery, str]] = {
    "bad signature": (
        lambda f, key, other: f.sign(f.id_claims(), key=other, kid="kid-1"),
        "signature",
    ),
    "alg none": (
        lambda f, key, other: unsigned_token({"alg": "none", "kid": "kid-1"}, f.id_claims()),
        "RS256",
    ),
    "HS256 signed with the public key": (
        lambda f, key, other: hs256_token(
            {"alg": "HS256", "typ": "JWT", "kid": "kid-1"}, f.id_claims(), public_pem(key)
        ),
        "RS256",
    ),
    "RS384 instead of the pinned RS256": (
        lambda f, key, other: f.sign(f.id_claims(), alg="RS384"),
        "RS256",
    ),
    "iss without trailing slash": (
        lambda f, key, other: f.sign(f.id_claims(iss=ISSUER.rstrip("/"))),
        "iss",
    ),
    "iss of another tenant": (
        lambda f, key, other: f.sign(f.id_claims(iss="https://evil.example/")),
        "iss",
    ),
    "wrong aud": (lambda f, key, other: f.sign(f.id_claims(aud="someone-else")), "aud"),
    "several aud without azp": (
        lambda f, key, other: f.sign(f.id_claims(aud=[APP_ID, "other"])),
        "azp",
    ),
    "several aud with foreign azp": (
        lambda f, key, other: f.sign(f.id_claims(aud=[APP_ID, "other"], azp="other")),
        "azp",
    ),
    "expired": (
        lambda f, key, other: f.sign(f.id_claims(exp=int(wall()) - 3600)),
        "expired",
    ),
    "issued in the future": (
        lambda f, key, other: f.sign(f.id_claims(iat=int(wall()) + 3600)),
        "future",
    ),
    "wrong sub": (lambda f, key, other: f.sign(f.id_claims(sub="auth0|mallory")), "sub"),
    "no sub": (lambda f, key, other: f.sign(f.id_claims(sub=None)), "sub"),
    "no exp": (
        lambda f, key, other: f.sign({k: v for k, v in f.id_claims().items() if k != "exp"}),
        "exp",
    ),
    "not a JWT": (lambda f, key, other: "not-a-jwt", "not a JWT"),
    "unknown kid": (
        lambda f, key, other: f.sign(f.id_claims(), key=other, kid="kid-999"),
        "does not publish",
    ),
}


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_forged_tokens_are_rejected(
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
    signing_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
    name: str,
) -> None:
    forge, match = FORGERIES[name]
    verifier, _ = build(http, secrets)
    token = forge(fake, signing_key, other_key)
    with pytest.raises(IdTokenRejected, match=match) as exc_info:
        await verifier.verify(token)
    assert exc_info.value.code == "upstream_error"
    assert token not in str(exc_info.value)


async def test_several_audiences_with_our_azp_are_accepted(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    verifier, _ = build(http, secrets)
    await verifier.verify(fake.sign(fake.id_claims(aud=[APP_ID, "other"], azp=APP_ID)))


async def test_expiry_leeway(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    verifier, _ = build(http, secrets, id_token_leeway=30.0)
    await verifier.verify(fake.sign(fake.id_claims(exp=int(wall()) - 10)))
    with pytest.raises(IdTokenRejected, match="expired"):
        await verifier.verify(fake.sign(fake.id_claims(exp=int(wall()) - 60)))


async def test_ps256_configuration_refuses_rs256_and_accepts_ps256(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    verifier, _ = build(http, secrets, signing_alg="PS256")
    with pytest.raises(IdTokenRejected, match="PS256"):
        await verifier.verify(fake.sign(fake.id_claims()))
    await verifier.verify(fake.sign(fake.id_claims(), alg="PS256"))


async def test_key_rotation_refetches_once(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    verifier, jwks = build(http, secrets)
    await verifier.verify(fake.sign(fake.id_claims()))
    fake.rotate_key()  # old key gone, kid-2 published
    token = fake.sign(fake.id_claims())
    async with trio.open_nursery() as nursery:
        for _ in range(5):  # concurrent verifications share one refetch
            nursery.start_soon(verifier.verify, token)
    assert fake.counts[JWKS] == 2
    assert jwks.state()["jwks_fetches"] == 2


async def test_unknown_kid_refetch_is_rate_limited(
    autojump_clock: MockClock,
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
    other_key: RSAPrivateKey,
) -> None:
    verifier, _ = build(http, secrets)
    await verifier.verify(fake.sign(fake.id_claims()))
    forged = fake.sign(fake.id_claims(), key=other_key, kid="kid-999")
    for _ in range(10):
        with pytest.raises(IdTokenRejected):
            await verifier.verify(forged)
    assert fake.counts[JWKS] == 2  # one refetch for the unknown kid, then no more
    await trio.sleep(31)
    with pytest.raises(IdTokenRejected):
        await verifier.verify(forged)
    assert fake.counts[JWKS] == 3


async def test_jwks_unavailable_is_an_upstream_error_and_retried_later(
    autojump_clock: MockClock,
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
) -> None:
    verifier, jwks = build(http, secrets)
    fake.fail_next(JWKS, *[httpx.Response(503)] * 3)
    with pytest.raises(UpstreamError) as exc_info:
        await verifier.verify(fake.sign(fake.id_claims()))
    assert not isinstance(exc_info.value, IdTokenRejected)
    assert jwks.state()["jwks_error"]
    await verifier.verify(fake.sign(fake.id_claims()))
    assert jwks.state()["jwks_error"] is None


async def test_jwks_without_usable_keys(
    http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.fail_next(JWKS, httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    verifier, _ = build(http, secrets)
    with pytest.raises(UpstreamError, match="no usable RSA"):
        await verifier.verify(fake.sign(fake.id_claims()))

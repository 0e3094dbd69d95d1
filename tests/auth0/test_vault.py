"""Credentials after an approval: Token Vault exchanges and the Management API fallback."""

from __future__ import annotations

import re

import httpx
import pytest
import trio
from trio.testing import MockClock

from aegisd.auth0.client import Auth0Client, token_fingerprint
from aegisd.auth0.tokens import Approval, Credential
from aegisd.config import CredentialSpec, ManagementConfig
from aegisd.errors import ConfigError, CredentialUnavailable, UpstreamError
from aegisd.secrets import MemorySecretStore

from .conftest import ClientFactory, make_config
from .fake_auth0 import (
    API_ID,
    API_SECRET,
    APP_ID,
    APP_SECRET,
    AUDIENCE,
    DOMAIN,
    MGMT_ID,
    MGMT_SECRET,
    SUBJECT_AT,
    SUBJECT_RT,
    TV_GRANT,
    TV_REQUESTED,
    FakeAuth0,
    wall,
)

TOKEN = "/oauth/token"
GITHUB = CredentialSpec(kind="token_vault", connection="github")


async def approve(client: Auth0Client, fake: FakeAuth0, *, offline: bool = False) -> Approval:
    fake.auto_decision, fake.auto_after = "approve", 0.0
    start = await client.start_approval(binding_message="Go #abcdef", offline_access=offline)
    return await client.wait_approval(start)


def exchanges(fake: FakeAuth0) -> list[dict[str, str]]:
    return [c.form for c in fake.calls(TOKEN) if c.form.get("grant_type") == TV_GRANT]


def cc_fetches(fake: FakeAuth0) -> int:
    return sum(1 for c in fake.calls(TOKEN) if c.form.get("grant_type") == "client_credentials")


def user_lookups(fake: FakeAuth0) -> int:
    return sum(1 for c in fake.recorded if c.path.startswith("/api/v2/users/"))


def clean(exc: BaseException) -> None:
    for secret in (APP_SECRET, MGMT_SECRET):
        assert secret not in str(exc) and secret not in repr(exc)


async def test_ciba_token_kind_returns_the_approval_token(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake)
    before = len(fake.recorded)
    cred = await client.obtain_credential(CredentialSpec(kind="ciba_token"), approval)
    assert (cred.path, cred.kind, cred.token_type) == ("ciba", "ciba_token", "Bearer")
    assert cred.access_token == approval.access_token
    assert cred.expires_at == approval.expires_at
    assert len(fake.recorded) == before


async def test_access_token_exchange_when_audience_makes_a_jwt(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake)
    cred = await client.obtain_credential(GITHUB, approval)
    assert cred.path == "token_vault" and cred.connection == "github"
    assert cred.access_token.startswith("gho_github_")
    assert cred.scope == "repo read:user"
    assert cred.expires_at == pytest.approx(wall() + 1377)
    assert cred.refusals == ()
    (form,) = exchanges(fake)
    assert form["subject_token_type"] == SUBJECT_AT
    assert form["subject_token"] == approval.access_token
    assert form["requested_token_type"] == TV_REQUESTED
    assert form["connection"] == "github"
    assert "scope" not in form and "login_hint" not in form
    assert cred.access_token not in repr(cred)


async def test_refresh_token_exchange_comes_first_and_sends_login_hint(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake, offline=True)
    assert approval.refresh_token is not None
    spec = CredentialSpec(kind="token_vault", connection="github", login_hint="1234567")
    cred = await client.obtain_credential(spec, approval)
    assert cred.path == "token_vault"
    (form,) = exchanges(fake)
    assert form["subject_token_type"] == SUBJECT_RT
    assert form["subject_token"] == approval.refresh_token
    assert form["login_hint"] == "1234567"


async def test_refused_refresh_exchange_falls_through_to_access_exchange(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake, offline=True)
    fake.refresh_tokens.clear()  # e.g. rotation on: Auth0 no longer knows the refresh token
    cred = await client.obtain_credential(GITHUB, approval)
    assert [f["subject_token_type"] for f in exchanges(fake)] == [SUBJECT_RT, SUBJECT_AT]
    assert cred.path == "token_vault"


async def test_answer_without_scope_is_accepted(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.vault_omit_scope = True
    client = make_client(audience=AUDIENCE)
    cred = await client.obtain_credential(GITHUB, await approve(client, fake))
    assert cred.path == "token_vault" and cred.scope == ""


async def test_opaque_ciba_token_is_never_sent_to_token_vault(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()  # no audience: the CIBA access token is opaque
    approval = await approve(client, fake)
    cred = await client.obtain_credential(GITHUB, approval)
    assert exchanges(fake) == []  # docs/AUTH0.md: an opaque token has no Custom API Client
    assert cred.path == "management"
    assert cred.access_token == "gho_from_identities"
    assert cred.expires_at is None
    assert any("opaque" in r for r in cred.refusals)


async def test_access_token_exchange_needs_the_custom_api_client(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE, token_vault=None)
    cred = await client.obtain_credential(GITHUB, await approve(client, fake))
    assert exchanges(fake) == []  # the application itself would get 403 at Auth0
    assert cred.path == "management"
    assert any("[auth0.token_vault]" in r for r in cred.refusals)


async def test_access_token_exchange_is_made_by_the_custom_api_client(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    await client.obtain_credential(GITHUB, await approve(client, fake))
    (call,) = [c for c in fake.calls(TOKEN) if c.form.get("grant_type") == TV_GRANT]
    assert call.form["client_id"] == API_ID and call.form["client_secret"] == API_SECRET


async def test_token_vault_scope_parameter_and_a_narrower_answer(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    spec = CredentialSpec(kind="token_vault", connection="github", scopes=["repo"])
    cred = await client.obtain_credential(spec, await approve(client, fake))
    (form,) = exchanges(fake)
    assert form["scope"] == "repo"
    assert cred.scope == "repo"  # the answer omitted scope: it is what was asked


async def test_token_vault_answer_lacking_a_needed_scope_is_refused_without_fallback(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    spec = CredentialSpec(kind="token_vault", connection="github", scopes=["repo", "delete_repo"])
    with pytest.raises(CredentialUnavailable, match="delete_repo"):
        await client.obtain_credential(spec, await approve(client, fake))
    assert user_lookups(fake) == 0  # no fallback: its token's scopes could not be checked


async def test_ciba_token_scopes_are_requested_and_checked(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE, scopes=["read:repos"])
    fake.auto_decision, fake.auto_after = "approve", 0.0
    start = await client.start_approval(binding_message="Go #abcdef", scopes=["write:repos"])
    (bc,) = fake.calls("/bc-authorize")
    assert bc.form["scope"] == "openid read:repos write:repos"
    approval = await client.wait_approval(start)
    spec = CredentialSpec(kind="ciba_token", scopes=["write:repos"])
    assert (await client.obtain_credential(spec, approval)).scope == approval.scope
    fake.grant_filter = {"write:repos"}  # RBAC filtered it out
    start = await client.start_approval(binding_message="Go #abcdef", scopes=["write:repos"])
    approval = await client.wait_approval(start)
    with pytest.raises(CredentialUnavailable, match="write:repos"):
        await client.obtain_credential(spec, approval)


async def test_refresh_token_is_revoked_after_the_exchange(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake, offline=True)
    assert approval.refresh_token is not None
    cred = await client.obtain_credential(GITHUB, approval)
    assert cred.refresh_token_revocation == "revoked"
    assert fake.revoked == [approval.refresh_token]
    (call,) = fake.calls("/oauth/revoke")
    assert call.form["client_id"] == APP_ID and "token_type_hint" not in call.form
    # the standing credential is gone: a second exchange with it is refused
    fake.recorded.clear()
    again = await client.obtain_credential(GITHUB, approval)
    assert [f["subject_token_type"] for f in exchanges(fake)] == [SUBJECT_RT, SUBJECT_AT]
    assert again.path == "token_vault"


async def test_refresh_token_is_revoked_when_no_credential_came_of_it(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.vault_refuses = True
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake, offline=True)
    spec = CredentialSpec(kind="token_vault", connection="github", order=["token_vault"])
    with pytest.raises(CredentialUnavailable, match="refresh token revoked"):
        await client.obtain_credential(spec, approval)
    assert fake.revoked == [approval.refresh_token]


async def test_a_failed_revocation_is_reported_not_fatal(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.revoke_status = 400
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake, offline=True)
    cred = await client.obtain_credential(GITHUB, approval)
    assert cred.path == "token_vault"
    assert cred.refresh_token_revocation == "revocation failed: HTTP 400 invalid_request"
    assert client.state()["refresh_token_revocations_failed"] == 1


async def test_no_revocation_without_a_refresh_token(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    cred = await client.obtain_credential(GITHUB, await approve(client, fake))
    assert cred.refresh_token_revocation is None and fake.calls("/oauth/revoke") == []


async def test_token_vault_refusal_falls_back_to_management(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.vault_refuses = True  # 403 unauthorized_client
    client = make_client(audience=AUDIENCE)
    cred = await client.obtain_credential(GITHUB, await approve(client, fake))
    assert cred.path == "management"
    assert len(exchanges(fake)) == 1
    (refusal,) = cred.refusals
    assert "403" in refusal and "unauthorized_client" in refusal


async def test_identity_without_token_explains_token_vault(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.identity_has_token = False
    client = make_client()
    with pytest.raises(CredentialUnavailable, match="Token Vault") as exc_info:
        await client.obtain_credential(GITHUB, await approve(client, fake))
    assert "no longer" in str(exc_info.value)
    clean(exc_info.value)


async def test_identity_without_token_blames_missing_scope_when_it_is_missing(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.identity_has_token = False
    fake.mgmt_scope = "read:users"
    client = make_client()
    with pytest.raises(CredentialUnavailable, match="read:user_idp_tokens"):
        await client.obtain_credential(GITHUB, await approve(client, fake))


async def test_management_not_configured(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(management=None)
    with pytest.raises(CredentialUnavailable, match=re.escape("[auth0.management]")) as exc_info:
        await client.obtain_credential(GITHUB, await approve(client, fake))
    assert "opaque" in str(exc_info.value)  # and why Token Vault did not help


async def test_no_identity_for_the_connection(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()
    spec = CredentialSpec(kind="token_vault", connection="google-oauth2")
    with pytest.raises(CredentialUnavailable, match="google-oauth2"):
        await client.obtain_credential(spec, await approve(client, fake))


@pytest.mark.parametrize("numeric", [True, False])
async def test_numeric_identity_ids_match_login_hint(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0, numeric: bool
) -> None:
    fake.identity_numeric_id = numeric
    client = make_client()
    approval = await approve(client, fake)
    spec = CredentialSpec(
        kind="token_vault", connection="github", login_hint="1234567", order=["management"]
    )
    assert (await client.obtain_credential(spec, approval)).path == "management"
    other = CredentialSpec(
        kind="token_vault", connection="github", login_hint="999", order=["management"]
    )
    with pytest.raises(CredentialUnavailable, match="999"):
        await client.obtain_credential(other, approval)


async def test_concurrent_fallback_callers_share_one_token_fetch(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.mgmt_latency = 1.0
    client = make_client()
    approval = await approve(client, fake)
    results: list[Credential] = []

    async def one() -> None:
        results.append(await client.obtain_credential(GITHUB, approval))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
    assert len(results) == 10 and all(r.path == "management" for r in results)
    assert cc_fetches(fake) == 1
    assert user_lookups(fake) == 10


async def test_concurrent_callers_share_a_failed_fetch_too(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()
    approval = await approve(client, fake)

    async def refuse(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1)
        return httpx.Response(401, json={"error": "invalid_client"})

    fake.fail_next(TOKEN, refuse)
    failures: list[CredentialUnavailable] = []
    # straight to the fallback, so the token endpoint's first request is the shared fetch
    mgmt_only = CredentialSpec(kind="token_vault", connection="github", order=["management"])

    async def one() -> None:
        try:
            await client.obtain_credential(mgmt_only, approval)
        except CredentialUnavailable as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert len(failures) == 5
    assert cc_fetches(fake) == 1
    for exc in failures:
        clean(exc)


async def test_management_token_is_cached_until_shortly_before_expiry(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.mgmt_token_ttl = 600  # refreshed 60 s before it expires
    client = make_client()
    approval = await approve(client, fake)
    await client.obtain_credential(GITHUB, approval)
    await trio.sleep(500)
    await client.obtain_credential(GITHUB, approval)
    assert cc_fetches(fake) == 1
    await trio.sleep(45)  # 545 s: inside the safety margin
    await client.obtain_credential(GITHUB, approval)
    assert cc_fetches(fake) == 2
    assert client.state()["management_token_cached"] is True


async def test_rejected_cached_token_is_fetched_again_once(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()
    approval = await approve(client, fake)
    await client.obtain_credential(GITHUB, approval)
    fake.mgmt_tokens.clear()  # Auth0 no longer accepts the cached token
    cred = await client.obtain_credential(GITHUB, approval)
    assert cred.path == "management"
    assert cc_fetches(fake) == 2


async def test_wrong_management_secret_gives_a_clean_refusal(
    autojump_clock: MockClock,
    http: httpx.AsyncClient,
    secrets: MemorySecretStore,
    fake: FakeAuth0,
) -> None:
    store = MemorySecretStore(
        {"auth0_client_secret": APP_SECRET, "management_client_secret": "wrong-" + MGMT_SECRET}
    )
    client = Auth0Client(make_config(), store, http, now=wall)
    with pytest.raises(CredentialUnavailable, match="management client") as exc_info:
        await client.obtain_credential(GITHUB, await approve(client, fake))
    clean(exc_info.value)
    assert "wrong-" not in str(exc_info.value)


async def test_missing_management_secret_is_explained(
    autojump_clock: MockClock, http: httpx.AsyncClient, fake: FakeAuth0
) -> None:
    store = MemorySecretStore({"auth0_client_secret": APP_SECRET})
    client = Auth0Client(make_config(), store, http, now=wall)
    with pytest.raises(CredentialUnavailable, match="management_client_secret"):
        await client.obtain_credential(GITHUB, await approve(client, fake))


async def test_management_audience_default_and_explicit(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client()
    await client.obtain_credential(GITHUB, await approve(client, fake))
    (cc,) = [c for c in fake.calls(TOKEN) if c.form.get("grant_type") == "client_credentials"]
    assert cc.form["audience"] == f"https://{DOMAIN}/api/v2/"  # trailing slash
    fake.mgmt_audience = "https://canonical.eu.auth0.com/api/v2/"
    client = make_client(
        management=ManagementConfig(client_id=MGMT_ID, audience=fake.mgmt_audience)
    )
    cred = await client.obtain_credential(GITHUB, await approve(client, fake))
    assert cred.path == "management"
    # the API is still called on the issuer's host (reference §4: custom domains)
    assert all(c.raw_path.startswith("/api/v2/users/") for c in fake.recorded if "users" in c.path)


async def test_custom_domain_keeps_the_canonical_domain_in_the_management_audience(
    autojump_clock: MockClock, http: httpx.AsyncClient, secrets: MemorySecretStore, fake: FakeAuth0
) -> None:
    fake.custom_domain = "login.example.org"
    fake.issuer_override = "https://login.example.org/"
    client = Auth0Client(
        make_config(domain="login.example.org", tenant_domain=DOMAIN), secrets, http, now=wall
    )
    spec = CredentialSpec(kind="token_vault", connection="github", order=["management"])
    cred = await client.obtain_credential(spec, await approve(client, fake))
    assert cred.path == "management"
    (cc,) = [c for c in fake.calls(TOKEN) if c.form.get("grant_type") == "client_credentials"]
    assert cc.form["audience"] == f"https://{DOMAIN}/api/v2/"  # not the custom domain


async def test_custom_domain_without_tenant_domain_is_a_config_error(
    http: httpx.AsyncClient, secrets: MemorySecretStore
) -> None:
    with pytest.raises(ConfigError, match="tenant_domain"):
        Auth0Client(make_config(domain="login.example.org"), secrets, http, now=wall)
    with pytest.raises(ConfigError, match=r"ends in \.auth0\.com"):
        Auth0Client(
            make_config(domain="login.example.org", tenant_domain="x.example"),
            secrets,
            http,
            now=wall,
        )


async def test_token_vault_only_order_reports_the_refusal(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    fake.vault_refuses = True
    client = make_client(audience=AUDIENCE)
    spec = CredentialSpec(kind="token_vault", connection="github", order=["token_vault"])
    with pytest.raises(CredentialUnavailable, match="403"):
        await client.obtain_credential(spec, await approve(client, fake))
    assert user_lookups(fake) == 0


async def test_token_vault_outage_is_not_a_refusal(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake)
    fake.fail_next(TOKEN, *[httpx.Response(502)] * 3)
    with pytest.raises(UpstreamError):
        await client.obtain_credential(GITHUB, approval)
    assert len(exchanges(fake)) == 3  # retried as an idempotent call
    assert user_lookups(fake) == 0


async def test_token_vault_success_without_access_token_is_upstream_error(
    autojump_clock: MockClock, make_client: ClientFactory, fake: FakeAuth0
) -> None:
    client = make_client(audience=AUDIENCE)
    approval = await approve(client, fake)
    fake.fail_next(TOKEN, httpx.Response(200, json={"token_type": "Bearer"}))
    with pytest.raises(UpstreamError, match="access_token"):
        await client.obtain_credential(GITHUB, approval)


def test_token_fingerprint() -> None:
    fp = token_fingerprint("gho_secret")
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", fp)
    assert fp == token_fingerprint("gho_secret") != token_fingerprint("gho_secreT")

"""Tests of ``aegisctl auth0 deploy-action`` (aegisd/auth0/deploy.py, cli/aegisctl/auth0.py).

The Auth0 Management API is replaced by ``FakeManagementApi``, an httpx.MockTransport
handler that keeps tenant state and follows auth0-protocol.md §4 (client-credentials token)
and §7 (create/update, build status, deploy only when built, bindings replaced by PATCH).
Time is virtual (``autojump_clock``), so build polling and Retry-After waits cost nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import trio
from aegisctl.main import cli
from click.testing import CliRunner

from aegisd.auth0.deploy import (
    ACTION_NAME,
    MANAGED_SECRETS,
    ActionDeployer,
    ActionSecrets,
    Call,
    ManagementTarget,
    action_code,
    default_action_domain,
    management_target,
    plan_calls,
    render_plan,
)
from aegisd.config import parse_config
from aegisd.errors import ConfigError, RateLimited, SecretsUnavailable, UpstreamError

DOMAIN = "tenant.example.auth0.com"
BASE = f"https://{DOMAIN}"
DEPLOYER_ID = "deployer-client-id"
DEPLOYER_SECRET = "deployer-secret-0123456789"
ACTION_APP_ID = "action-app-client-id"
ACTION_APP_SECRET = "action-app-secret-abcdefghij"
TOKEN = "mgmt-token-eyJhbGciOiJSUzI1NiJ9"
ALL_SECRETS = (DEPLOYER_SECRET, ACTION_APP_SECRET, TOKEN)

TARGET = ManagementTarget(base_url=BASE, audience=f"{BASE}/api/v2/", client_id=DEPLOYER_ID)
PRIMARY = "auth0|approver"
SECRETS = ActionSecrets(
    domain=DOMAIN,
    client_id=ACTION_APP_ID,
    client_secret=ACTION_APP_SECRET,
    primary_user_id=PRIMARY,
    link_connections=("email", "corp-sso"),
)
EXPECTED_SECRETS = [
    {"name": "DOMAIN", "value": DOMAIN},
    {"name": "CLIENT_ID", "value": ACTION_APP_ID},
    {"name": "CLIENT_SECRET", "value": ACTION_APP_SECRET},
    {"name": "PRIMARY_USER_ID", "value": PRIMARY},
    {"name": "LINK_CONNECTIONS", "value": "email,corp-sso"},
    {"name": "LINK_MODE", "value": "verified_email"},
]
CODE = "exports.onExecutePostLogin = async (event, api) => {};\n"


class FakeManagementApi:
    """One tenant's Actions as the Management API exposes them."""

    def __init__(
        self,
        *,
        build_script: tuple[str, ...] = ("pending", "building", "built"),
        scope: str = "create:actions read:actions update:actions",
    ) -> None:
        self.build_script = build_script
        self.scope = scope
        self.requests: list[httpx.Request] = []
        self.actions: dict[str, dict[str, Any]] = {}
        self.bindings: list[dict[str, Any]] = []
        self.throttled: list[tuple[str, str, int, str | None]] = []
        self.failures: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._builds: dict[str, list[str]] = {}
        self._next = 0

    # -- test set-up helpers --

    def add_action(self, name: str, trigger: str = "post-login") -> str:
        self._next += 1
        action_id = f"act-{self._next:04d}"
        self.actions[action_id] = {
            "id": action_id,
            "name": name,
            "supported_triggers": [{"id": trigger, "version": "v3"}],
            "code": "old code",
            "runtime": "node18",
            "status": "built",
            "secrets": [],
            "version": 1,
        }
        return action_id

    def bind(self, action_id: str) -> None:
        action = self.actions[action_id]
        self.bindings.append(
            {
                "id": f"bind-{len(self.bindings)}",
                "trigger_id": "post-login",
                "display_name": action["name"],
                "action": {"id": action_id, "name": action["name"]},
                "created_at": "2025-01-01T00:00:00.000Z",
            }
        )

    def throttle(
        self, method: str, path: str, times: int = 1, retry_after: str | None = "7"
    ) -> None:
        self.throttled.append((method, path, times, retry_after))

    def calls(self, method: str | None = None, prefix: str = "") -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.url.path.startswith(prefix)
        ]

    # -- the handler --

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        for i, (m, p, times, retry_after) in enumerate(self.throttled):
            if m == method and path == p and times > 0:
                self.throttled[i] = (m, p, times - 1, retry_after)
                headers = {"retry-after": retry_after} if retry_after else {}
                body = {"statusCode": 429, "error": "Too Many Requests", "message": "slow down"}
                return httpx.Response(429, json=body, headers=headers)
        if (method, path) in self.failures:
            status, body = self.failures[(method, path)]
            return httpx.Response(status, json=body)
        if method == "POST" and path == "/oauth/token":
            return self._token(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "Unauthorized", "Invalid token")
        if path == "/api/v2/actions/actions":
            if method == "GET":
                name = request.url.params.get("actionName")
                found = [a for a in self.actions.values() if name is None or a["name"] == name]
                return httpx.Response(
                    200, json={"actions": found, "total": len(found), "page": 0, "per_page": 50}
                )
            if method == "POST":
                return self._create(json.loads(request.content))
        if path.startswith("/api/v2/actions/actions/"):
            rest = path.removeprefix("/api/v2/actions/actions/")
            action_id, _, tail = rest.partition("/")
            if action_id not in self.actions:
                return _error(404, "Not Found", "action not found")
            if method == "GET" and not tail:
                return self._status(action_id)
            if method == "PATCH" and not tail:
                return self._update(action_id, json.loads(request.content))
            if method == "POST" and tail == "deploy":
                return self._deploy(action_id)
        if path == "/api/v2/actions/triggers/post-login/bindings":
            if method == "GET":
                page = int(request.url.params.get("page", "0"))
                per_page = int(request.url.params.get("per_page", "20"))
                chunk = self.bindings[page * per_page : (page + 1) * per_page]
                return httpx.Response(
                    200,
                    json={
                        "bindings": chunk,
                        "total": len(self.bindings),
                        "page": page,
                        "per_page": per_page,
                    },
                )
            if method == "PATCH":
                return self._replace_bindings(json.loads(request.content))
        return _error(404, "Not Found", "no such endpoint")

    def _token(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        if (form.get("client_id"), form.get("client_secret")) != (DEPLOYER_ID, DEPLOYER_SECRET):
            return httpx.Response(
                401, json={"error": "access_denied", "error_description": "Unauthorized"}
            )
        if form.get("audience") != f"{BASE}/api/v2/":
            return httpx.Response(
                403, json={"error": "access_denied", "error_description": "Service not enabled"}
            )
        return httpx.Response(
            200,
            json={
                "access_token": TOKEN,
                "expires_in": 86400,
                "scope": self.scope,
                "token_type": "Bearer",
            },
        )

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        for key in ("name", "supported_triggers", "code"):
            if key not in body:
                return _error(400, "Bad Request", f"Payload validation error: missing {key}")
        action_id = self.add_action(body["name"])
        self.actions[action_id].update(body, status="pending", version=0)
        self._builds[action_id] = list(self.build_script)
        return httpx.Response(201, json=_public(self.actions[action_id]))

    def _update(self, action_id: str, body: dict[str, Any]) -> httpx.Response:
        if "name" in body and body["name"] != self.actions[action_id]["name"]:
            return _error(400, "Bad Request", "renaming is not expected here")
        self.actions[action_id].update(body, status="pending")
        self._builds[action_id] = list(self.build_script)
        return httpx.Response(200, json=_public(self.actions[action_id]))

    def _status(self, action_id: str) -> httpx.Response:
        script = self._builds.get(action_id, [])
        if script:
            self.actions[action_id]["status"] = script.pop(0) if len(script) > 1 else script[0]
        return httpx.Response(200, json=_public(self.actions[action_id]))

    def _deploy(self, action_id: str) -> httpx.Response:
        action = self.actions[action_id]
        if action["status"] != "built":
            return _error(
                400, "Bad Request", "A draft must be in the 'built' state before it can be deployed"
            )
        action["version"] += 1
        action["deployed"] = True
        return httpx.Response(
            200, json={"id": f"ver-{action['version']}", "number": action["version"]}
        )

    def _replace_bindings(self, body: dict[str, Any]) -> httpx.Response:
        new: list[dict[str, Any]] = []
        for i, item in enumerate(body["bindings"]):
            ref = item["ref"]
            if ref["type"] != "action_id" or ref["value"] not in self.actions:
                return _error(400, "Bad Request", "unknown action in bindings")
            if not self.actions[ref["value"]].get("deployed", True):
                return _error(400, "Bad Request", "action is not deployed")
            new.append(
                {
                    "id": f"bind-new-{i}",
                    "trigger_id": "post-login",
                    "display_name": item.get("display_name"),
                    "action": {"id": ref["value"], "name": self.actions[ref["value"]]["name"]},
                }
            )
        self.bindings = new
        return httpx.Response(200, json={"bindings": new})


def _public(action: dict[str, Any]) -> dict[str, Any]:
    """Auth0 never returns secret values, only their names."""
    shown = dict(action)
    shown["secrets"] = [{"name": s["name"]} for s in action.get("secrets", [])]
    return shown


def _error(status: int, error: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "error": error, "message": message})


@pytest.fixture
def api() -> FakeManagementApi:
    return FakeManagementApi()


@pytest.fixture
def lines() -> list[str]:
    return []


def _deployer(
    api: FakeManagementApi, lines: list[str], **kwargs: Any
) -> tuple[ActionDeployer, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    return ActionDeployer(http, TARGET, report=lines.append, **kwargs), http


async def _deploy(api: FakeManagementApi, lines: list[str], **kwargs: Any) -> Any:
    deployer, http = _deployer(api, lines, **kwargs)
    async with http:
        return await deployer.deploy(
            name=ACTION_NAME, code=CODE, secrets=SECRETS, client_secret=DEPLOYER_SECRET
        )


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text


def _binding_ids(api: FakeManagementApi) -> list[str]:
    return [b["action"]["id"] for b in api.bindings]


# -- create, update, bind --


async def test_creates_builds_deploys_and_binds_first_keeping_existing_bindings(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    other1, other2 = api.add_action("add-claims"), api.add_action("mfa-policy")
    api.bind(other1)
    api.bind(other2)

    result = await _deploy(api, lines)

    assert result.created is True
    assert result.version == 1
    assert result.binding_added is True
    action = api.actions[result.action_id]
    assert action["name"] == ACTION_NAME
    assert action["code"] == CODE
    assert action["runtime"] == "node22"
    assert action["supported_triggers"] == [{"id": "post-login", "version": "v3"}]
    assert action["secrets"] == EXPECTED_SECRETS
    assert action["deployed"] is True
    # The PATCH replaced the list: ours first, the others kept in their order.
    assert _binding_ids(api) == [result.action_id, other1, other2]
    assert [b["display_name"] for b in api.bindings] == [ACTION_NAME, "add-claims", "mfa-policy"]
    # It waited through "pending" and "building" before deploying.
    assert len(api.calls("GET", f"/api/v2/actions/actions/{result.action_id}")) == 3
    assert any("building" in line for line in lines)
    _assert_no_secret(*lines)


async def test_updates_an_existing_action_and_does_not_duplicate_its_binding(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    other = api.add_action("add-claims")
    ours = api.add_action(ACTION_NAME)
    api.bind(other)
    api.bind(ours)
    before = list(api.bindings)

    result = await _deploy(api, lines)

    assert (result.action_id, result.created, result.binding_added) == (ours, False, False)
    assert api.calls("POST", "/api/v2/actions/actions") == [] or all(
        r.url.path.endswith("/deploy") for r in api.calls("POST", "/api/v2/actions/actions")
    )
    assert len(api.calls("PATCH", f"/api/v2/actions/actions/{ours}")) == 1
    assert api.actions[ours]["code"] == CODE
    assert api.actions[ours]["runtime"] == "node22"
    assert api.actions[ours]["version"] == 2
    assert api.calls("PATCH", "/api/v2/actions/triggers") == []
    assert api.bindings == before


async def test_an_action_holding_secrets_it_does_not_manage_is_refused_before_any_change(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    ours = api.add_action(ACTION_NAME)
    # the allow-list the old docs said to add in the Dashboard, and one of the tenant's own
    api.actions[ours]["secrets"] = [
        {"name": "LINK_CONNECTIONS", "value": "email"},
        {"name": "SLACK_WEBHOOK", "value": "https://hooks.example/x"},
    ]

    with pytest.raises(ConfigError, match="SLACK_WEBHOOK") as exc_info:
        await _deploy(api, lines)

    assert "would delete them" in exc_info.value.message
    assert "https://hooks.example/x" not in exc_info.value.message
    assert api.calls("PATCH") == [] and api.calls("POST", "/api/v2/actions/actions/") == []
    assert api.actions[ours]["code"] == "old code"


async def test_a_redeploy_sends_every_managed_secret_again(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    ours = api.add_action(ACTION_NAME)
    api.actions[ours]["secrets"] = [{"name": n, "value": "old"} for n in MANAGED_SECRETS]

    await _deploy(api, lines)

    assert api.actions[ours]["secrets"] == EXPECTED_SECRETS  # the PATCH replaced them all


def test_reauthenticate_mode_needs_an_https_page_and_a_session_secret() -> None:
    with pytest.raises(ConfigError, match="reauthenticate"):
        ActionSecrets(domain=DOMAIN, client_id="c", client_secret="s", link_mode="reauthenticate")
    full = ActionSecrets(
        domain=DOMAIN,
        client_id="c",
        client_secret="s",
        link_mode="reauthenticate",
        link_redirect_url="https://link.example/start",
        link_session_secret="shh-0123456789",
    )
    names = [s["name"] for s in full.as_list()]
    assert names[-3:] == ["LINK_MODE", "LINK_REDIRECT_URL", "LINK_SESSION_SECRET"]
    assert "shh-0123456789" not in repr(full)


async def test_update_of_an_unbound_action_adds_one_binding(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    other = api.add_action("add-claims")
    api.bind(other)
    ours = api.add_action(ACTION_NAME)

    result = await _deploy(api, lines)

    assert result.created is False
    assert _binding_ids(api) == [ours, other]


async def test_every_page_of_existing_bindings_is_kept(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    others = [api.add_action(f"other-{i}") for i in range(73)]
    for action_id in others:
        api.bind(action_id)

    result = await _deploy(api, lines)

    assert _binding_ids(api) == [result.action_id, *others]
    assert len(api.calls("GET", "/api/v2/actions/triggers/post-login/bindings")) == 2


async def test_an_action_of_that_name_on_another_trigger_is_not_touched(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.add_action(ACTION_NAME, trigger="credentials-exchange")

    with pytest.raises(UpstreamError, match="another trigger"):
        await _deploy(api, lines)

    assert api.calls("PATCH") == []
    assert api.calls("POST", "/api/v2/actions/actions") == []


# -- the build --


async def test_a_failed_build_stops_before_deploy_and_bindings(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api = FakeManagementApi(build_script=("building", "failed"))

    with pytest.raises(UpstreamError, match="failed to build") as info:
        await _deploy(api, lines)

    assert [r for r in api.requests if r.url.path.endswith("/deploy")] == []
    assert api.calls("PATCH") == []
    assert api.bindings == []
    _assert_no_secret(str(info.value), *lines)


async def test_a_build_that_never_finishes_times_out(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api = FakeManagementApi(build_script=("building",))
    start = trio.current_time()

    with pytest.raises(UpstreamError, match="not built within 30 s"):
        await _deploy(api, lines, build_timeout=30.0)

    elapsed = trio.current_time() - start
    assert 20.0 <= elapsed <= 30.0
    # Backoff, not a hammering loop: far fewer polls than seconds waited.
    assert len(api.calls("GET", "/api/v2/actions/actions/act-")) <= 8
    assert [r for r in api.requests if r.url.path.endswith("/deploy")] == []


# -- rate limits and errors --


async def test_429_retry_after_is_honoured(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.throttle("POST", "/api/v2/actions/actions", times=1, retry_after="7")
    start = trio.current_time()

    result = await _deploy(api, lines)

    creates = api.calls("POST", "/api/v2/actions/actions")
    creates = [r for r in creates if r.url.path == "/api/v2/actions/actions"]
    assert len(creates) == 2  # the throttled one and its retry
    assert len(api.actions) == 1
    assert trio.current_time() - start >= 7.0
    assert result.binding_added is True
    assert any("429" in line and "7 s" in line for line in lines)


async def test_persistent_429_gives_rate_limited_with_retry_after(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.throttle("GET", "/api/v2/actions/actions", times=99, retry_after="3")

    with pytest.raises(RateLimited) as info:
        await _deploy(api, lines, max_attempts=4)

    assert info.value.retry_after == 3.0
    assert len(api.calls("GET", "/api/v2/actions/actions")) == 4


async def test_a_long_retry_after_fails_at_once_instead_of_waiting(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.throttle("POST", "/oauth/token", times=1, retry_after="3600")
    start = trio.current_time()

    with pytest.raises(RateLimited) as info:
        await _deploy(api, lines)

    assert info.value.retry_after == 3600.0
    assert trio.current_time() == start


async def test_a_refused_token_request_says_what_to_check_without_the_secret(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api = FakeManagementApi()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    deployer = ActionDeployer(http, TARGET, report=lines.append)
    async with http:
        with pytest.raises(UpstreamError) as info:
            await deployer.deploy(
                name=ACTION_NAME, code=CODE, secrets=SECRETS, client_secret="wrong-secret-xyz"
            )
    message = info.value.message
    assert "[auth0.management] client_id" in message
    assert "access_denied" in message
    assert "wrong-secret-xyz" not in message
    assert api.calls(prefix="/api/v2") == []


async def test_a_token_without_the_deploy_scopes_is_refused_early(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api = FakeManagementApi(scope="read:actions read:users")

    with pytest.raises(UpstreamError, match="create:actions update:actions"):
        await _deploy(api, lines)

    assert api.calls(prefix="/api/v2") == []


async def test_auth0_error_text_is_shown_but_scrubbed_of_secrets(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.failures[("POST", "/api/v2/actions/actions")] = (
        400,
        {
            "statusCode": 400,
            "error": "Bad Request",
            "errorCode": "invalid_body",
            "message": f"Payload validation error: secret value {ACTION_APP_SECRET} too long",
        },
    )

    with pytest.raises(UpstreamError) as info:
        await _deploy(api, lines)

    message = info.value.message
    assert "creating the Action failed: HTTP 400" in message
    assert "invalid_body" in message and "Payload validation error" in message
    _assert_no_secret(message, repr(info.value))


async def test_a_missing_scope_at_the_api_names_the_scopes(
    api: FakeManagementApi, lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    api.failures[("GET", "/api/v2/actions/triggers/post-login/bindings")] = (
        403,
        {"statusCode": 403, "error": "Forbidden", "message": "Insufficient scope"},
    )

    with pytest.raises(UpstreamError, match="create:actions read:actions update:actions"):
        await _deploy(api, lines)


async def test_an_unreachable_tenant_is_an_upstream_error(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with http:
        deployer = ActionDeployer(http, TARGET, report=lines.append)
        with pytest.raises(UpstreamError, match=f"cannot reach {DOMAIN}"):
            await deployer.deploy(
                name=ACTION_NAME, code=CODE, secrets=SECRETS, client_secret=DEPLOYER_SECRET
            )


async def test_client_secret_basic_keeps_the_secret_out_of_the_body(
    lines: list[str], autojump_clock: trio.abc.Clock
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "access_denied"})

    target = ManagementTarget(
        base_url=BASE,
        audience=f"{BASE}/api/v2/",
        client_id=DEPLOYER_ID,
        client_auth="client_secret_basic",
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(UpstreamError):
            await ActionDeployer(http, target).deploy(
                name=ACTION_NAME, code=CODE, secrets=SECRETS, client_secret=DEPLOYER_SECRET
            )
    token_request = seen[0]
    assert DEPLOYER_SECRET.encode() not in token_request.content
    auth = httpx.BasicAuth(DEPLOYER_ID, DEPLOYER_SECRET)
    expected = next(auth.auth_flow(httpx.Request("POST", BASE))).headers["authorization"]
    assert token_request.headers["authorization"] == expected


# -- dry run and the shipped code --


def test_plan_lists_every_call_with_secrets_redacted() -> None:
    lines = render_plan(plan_calls(TARGET, name=ACTION_NAME, code=action_code()))
    text = "\n".join(lines)

    assert [line.split()[0:2] for line in lines] == [
        ["POST", "/oauth/token"],
        ["GET", f"/api/v2/actions/actions?actionName={ACTION_NAME}"],
        ["POST", "/api/v2/actions/actions"],
        ["GET", "/api/v2/actions/actions/<action-id>"],
        ["PATCH", "/api/v2/actions/actions/<action-id>"],
        ["GET", "/api/v2/actions/actions/<action-id>"],
        ["POST", "/api/v2/actions/actions/<action-id>/deploy"],
        ["GET", "/api/v2/actions/triggers/post-login/bindings?page=0&per_page=50"],
        ["PATCH", "/api/v2/actions/triggers/post-login/bindings"],
    ]
    assert '"client_secret":"<redacted>"' in text
    assert '{"name":"CLIENT_SECRET","value":"<redacted>"}' in text
    assert '{"name":"LINK_SESSION_SECRET","value":"<redacted>"}' in text
    assert '"runtime":"node22"' in text
    assert "onExecutePostLogin" not in text  # code shown by size and digest only


def test_rendering_a_call_never_shows_secret_values() -> None:
    token = Call(
        "POST", "/oauth/token", {"client_id": DEPLOYER_ID, "client_secret": DEPLOYER_SECRET}
    )
    create = Call("POST", "/api/v2/actions/actions", {"code": CODE, "secrets": SECRETS.as_list()})

    text = token.render() + create.render() + repr(token) + repr(SECRETS)

    _assert_no_secret(text)
    assert DEPLOYER_ID in text  # the client id is not a secret and helps to check the config
    assert DOMAIN not in text and ACTION_APP_ID not in text  # Action secrets hide every value


def test_the_shipped_action_is_plain_commonjs_within_auth0_limits() -> None:
    code = action_code()
    assert "exports.onExecutePostLogin" in code
    assert "require(" not in code  # no npm dependencies
    assert len(code.encode()) < 100 * 1024


# -- config --


def _cfg(extra: str = "", auth0: str = f'domain = "{DOMAIN}"') -> str:
    return f'[auth0]\n{auth0}\nclient_id = "aegis-app"\nuser_id = "auth0|approver"\n{extra}'


def test_management_target_behind_a_custom_domain_keeps_the_canonical_audience() -> None:
    cfg = parse_config(
        _cfg(
            f'[auth0.management]\nclient_id = "{DEPLOYER_ID}"\n',
            auth0=f'domain = "login.example.org"\ntenant_domain = "{DOMAIN}"',
        )
    )
    target = management_target(cfg)
    assert target.base_url == "https://login.example.org"
    assert target.audience == f"https://{DOMAIN}/api/v2/"
    assert default_action_domain(cfg) == DOMAIN  # the Action's DOMAIN secret
    bare = parse_config(
        _cfg('[auth0.management]\nclient_id = "x"\n', auth0='domain = "login.example.org"'),
        "aegisd.toml",
    )
    with pytest.raises(ConfigError, match="tenant_domain"):
        management_target(bare)
    assert default_action_domain(bare) is None


def test_management_target_from_config() -> None:
    cfg = parse_config(_cfg(f'[auth0.management]\nclient_id = "{DEPLOYER_ID}"\n'))
    assert management_target(cfg) == TARGET

    dev = parse_config(
        _cfg(
            f'[auth0.management]\nclient_id = "{DEPLOYER_ID}"\n',
            auth0='issuer = "http://127.0.0.1:8765/"\nallow_insecure_http = true',
        )
    )
    assert management_target(dev).base_url == "http://127.0.0.1:8765"
    assert management_target(dev).audience == "http://127.0.0.1:8765/api/v2/"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_cfg(), "auth0.management: section missing"),
        ('[secrets]\nbackend = "env"\n', "key auth0: section missing"),
        (
            _cfg(
                '[auth0.management]\nclient_id = "x"\n',
                auth0='issuer = "http://auth.example.com/"\nallow_insecure_http = true',
            ),
            "plain http is allowed only for a loopback",
        ),
        (
            _cfg('[auth0.management]\nclient_id = "x"\nclient_auth = "private_key_jwt"\n'),
            "client_secret_post and client_secret_basic only",
        ),
    ],
)
def test_management_target_config_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        management_target(parse_config(text, "aegisd.toml"))


# -- the click command --


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "aegisd.toml"
    path.write_text(
        _cfg(f'[auth0.management]\nclient_id = "{DEPLOYER_ID}"\n[secrets]\nbackend = "env"\n')
    )
    return path


@pytest.fixture
def tenant(monkeypatch: pytest.MonkeyPatch) -> FakeManagementApi:
    """Route every request the CLI's own httpx client sends to a fake tenant."""
    fake = FakeManagementApi(build_script=("built",))

    async def send(self: httpx.AsyncClient, request: httpx.Request, **_: Any) -> httpx.Response:
        return fake(request)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return fake


def test_cli_dry_run_prints_the_calls_and_sends_nothing(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tenant: FakeManagementApi
) -> None:
    monkeypatch.setenv("AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET", DEPLOYER_SECRET)

    result = CliRunner().invoke(
        cli, ["--config", str(config_file), "auth0", "deploy-action", "--dry-run"]
    )

    assert result.exit_code == 0, result.output
    assert "dry run: nothing is sent" in result.output
    assert "POST  /oauth/token" in result.output
    assert "PATCH /api/v2/actions/triggers/post-login/bindings" in result.output
    assert BASE in result.output
    assert DEPLOYER_SECRET not in result.output
    assert tenant.requests == []


def test_cli_deploys_with_the_management_app_by_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tenant: FakeManagementApi
) -> None:
    monkeypatch.setenv("AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET", DEPLOYER_SECRET)

    result = CliRunner().invoke(cli, ["--config", str(config_file), "auth0", "deploy-action"])

    assert result.exit_code == 0, result.output
    assert f"done: Action '{ACTION_NAME}' created, deployed, bound to post-login" in result.output
    (action,) = tenant.actions.values()
    assert action["secrets"] == [
        {"name": "DOMAIN", "value": DOMAIN},
        {"name": "CLIENT_ID", "value": DEPLOYER_ID},
        {"name": "CLIENT_SECRET", "value": DEPLOYER_SECRET},
        {"name": "PRIMARY_USER_ID", "value": "auth0|approver"},  # [auth0] user_id
        {"name": "LINK_MODE", "value": "verified_email"},
    ]
    assert "link nothing (fail closed)" in result.output  # no --link-connections given
    _assert_no_secret(result.output)


def test_cli_reads_another_apps_secret_from_stdin_not_argv(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tenant: FakeManagementApi
) -> None:
    monkeypatch.setenv("AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET", DEPLOYER_SECRET)
    args = ["--config", str(config_file), "auth0", "deploy-action"]
    args += ["--action-client-id", ACTION_APP_ID]

    result = CliRunner().invoke(cli, args, input=ACTION_APP_SECRET + "\n")

    assert result.exit_code == 0, result.output
    (action,) = tenant.actions.values()
    assert action["secrets"][1:3] == [
        {"name": "CLIENT_ID", "value": ACTION_APP_ID},
        {"name": "CLIENT_SECRET", "value": ACTION_APP_SECRET},
    ]
    _assert_no_secret(result.output)


def test_cli_sets_every_link_option_and_reads_the_session_secret_from_a_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tenant: FakeManagementApi, tmp_path: Path
) -> None:
    monkeypatch.setenv("AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET", DEPLOYER_SECRET)
    secret_file = tmp_path / "link-secret"
    secret_file.write_text("session-secret-abcdef0123\n")
    args = ["--config", str(config_file), "auth0", "deploy-action"]
    args += ["--link-connections", "email, corp-sso", "--primary-user-id", "auth0|other"]
    args += ["--link-mode", "reauthenticate", "--link-redirect-url", "https://link.example/go"]
    args += ["--link-session-secret-file", str(secret_file)]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    (action,) = tenant.actions.values()
    values = {s["name"]: s["value"] for s in action["secrets"]}
    assert values["LINK_CONNECTIONS"] == "email,corp-sso"
    assert values["PRIMARY_USER_ID"] == "auth0|other"
    assert values["LINK_MODE"] == "reauthenticate"
    assert values["LINK_REDIRECT_URL"] == "https://link.example/go"
    assert values["LINK_SESSION_SECRET"] == "session-secret-abcdef0123"
    assert "session-secret-abcdef0123" not in result.output


def test_cli_without_the_management_secret_fails_before_any_request(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tenant: FakeManagementApi
) -> None:
    monkeypatch.delenv("AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET", raising=False)

    result = CliRunner().invoke(cli, ["--config", str(config_file), "auth0", "deploy-action"])

    assert isinstance(result.exception, SecretsUnavailable)
    assert "management_client_secret" in result.exception.message
    assert tenant.requests == []

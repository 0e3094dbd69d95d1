"""Deploying the account-linking Post-Login Action through the Auth0 Management API.

This module owns the deploy sequence of ``auth0-protocol.md`` §7: a Management API token by
client credentials (§4), find the Action by name, create or update it (code, runtime
``node22``, trigger ``post-login`` v3, its secrets), wait until Auth0 has built it, deploy
it, and bind it to the post-login trigger while keeping every existing binding (the PATCH
replaces the whole list). Every secret the Action reads is sent on each deploy, and an
existing Action holding other secrets is refused before the PATCH (which would delete them).
It also describes that sequence without sending anything, for ``--dry-run``. The HTTP layer
(token, retries, redaction) is ``deploy_http.py``'s.

It must not print, log or put into an exception any secret value, the Action's secret
values, or a token; foreign exceptions (httpx, JSON) are translated to ``AegisError``
subclasses here. HTTP goes through the ``httpx.AsyncClient`` passed in; time only through
``trio.sleep``/``trio.current_time`` so tests run under ``autojump_clock``. It does not read
config files or secret stores itself: the CLI hands it what it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Final, Literal, final
from urllib.parse import quote, urlencode

import httpx
import trio

from aegisd.auth0.deploy_http import (
    DEPLOY_SCOPES,
    REDACTED,
    Call,
    JsonObject,
    ManagementSession,
    ManagementTarget,
    Report,
    default_action_domain,
    management_target,
)
from aegisd.errors import ConfigError, UpstreamError

__all__ = [
    "ACTION_NAME",
    "ACTION_SCOPES",
    "DEPLOY_SCOPES",
    "MANAGED_SECRETS",
    "RUNTIME",
    "ActionDeployer",
    "ActionSecrets",
    "Call",
    "DeployResult",
    "ManagementTarget",
    "action_code",
    "default_action_domain",
    "management_target",
    "plan_calls",
    "render_plan",
]

ACTION_NAME: Final = "aegis-link-identities"
RUNTIME: Final = "node22"
TRIGGER_ID: Final = "post-login"
TRIGGER_VERSION: Final = "v3"
ACTION_SCOPES: Final = ("read:users", "update:users")
ACTION_ID_PLACEHOLDER: Final = "<action-id>"
# Every secret the Action reads (MGMT_BASE_URL is for tests only and never deployed). Each
# PATCH replaces the whole list, so a deploy sends all of these and refuses an Action that
# holds any other: it would silently delete it (reference §11, docs-v2 PR #1699).
MANAGED_SECRETS: Final = (
    "DOMAIN",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "PRIMARY_USER_ID",
    "LINK_CONNECTIONS",
    "LINK_MODE",
    "LINK_REDIRECT_URL",
    "LINK_SESSION_SECRET",
)
_ACTION_RESOURCE: Final = "actions/link-identities.js"
_MAX_CODE_BYTES: Final = 100 * 1024  # Auth0's Action code limit (A-LIM)
_BINDINGS_PAGE: Final = 50
_MAX_BINDING_PAGES: Final = 20


def action_code() -> str:
    """The Action's JavaScript, shipped as package data next to this module.

    Raises:
        ConfigError: the file is missing from the installation or larger than Auth0 accepts.
    """
    try:
        code = resources.files("aegisd.auth0").joinpath(_ACTION_RESOURCE).read_text("utf-8")
    except OSError:
        raise ConfigError(
            f"the Action source aegisd/auth0/{_ACTION_RESOURCE} is missing from this install"
        ) from None
    if len(code.encode("utf-8")) > _MAX_CODE_BYTES:
        raise ConfigError("the Action source exceeds Auth0's 100 kB limit")
    return code


@final
@dataclass(frozen=True)
class ActionSecrets:
    """Every secret the Action reads (``MANAGED_SECRETS``); values are never printed.

    Attributes:
        domain: the canonical tenant domain (Management API audience, also behind a custom
            domain).
        client_id, client_secret: the Action's M2M app (``read:users update:users``).
        primary_user_id: the only user side identities are linked into (``[auth0] user_id``).
        link_connections: connection names whose logins may be linked; empty turns linking
            off (the Action fails closed).
        link_mode: ``verified_email`` or ``reauthenticate`` (Auth0's redirect pattern).
        link_redirect_url, link_session_secret: for ``reauthenticate`` only.
    """

    domain: str = field(repr=False)
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    primary_user_id: str = field(repr=False, default="")
    link_connections: tuple[str, ...] = field(repr=False, default=())
    link_mode: Literal["verified_email", "reauthenticate"] = "verified_email"
    link_redirect_url: str = field(repr=False, default="")
    link_session_secret: str = field(repr=False, default="")

    def __post_init__(self) -> None:
        if self.link_mode == "reauthenticate" and not (
            self.link_redirect_url.startswith("https://") and self.link_session_secret
        ):
            raise ConfigError(
                "link mode 'reauthenticate' needs an https:// --link-redirect-url and a "
                "--link-session-secret-file"
            )

    def as_list(self) -> list[JsonObject]:
        """Every managed secret that has a value, in ``MANAGED_SECRETS`` order."""
        values = {
            "DOMAIN": self.domain,
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "PRIMARY_USER_ID": self.primary_user_id,
            "LINK_CONNECTIONS": ",".join(self.link_connections),
            "LINK_MODE": self.link_mode,
            "LINK_REDIRECT_URL": self.link_redirect_url,
            "LINK_SESSION_SECRET": self.link_session_secret,
        }
        return [{"name": n, "value": values[n]} for n in MANAGED_SECRETS if values[n]]

    def values(self) -> tuple[str, ...]:
        return tuple(str(item["value"]) for item in self.as_list())


@final
@dataclass(frozen=True)
class DeployResult:
    """What a deployment did.

    Attributes:
        action_id: the Action's id in the tenant.
        created: True when the Action was created, False when an existing one was updated.
        version: the deployed version number, when Auth0 reported it.
        binding_added: False when the Action was already bound to post-login.
    """

    action_id: str
    created: bool
    version: int | None
    binding_added: bool


@final
class _Calls:
    """Builds the requests; shared by ``plan_calls`` and ``ActionDeployer`` so that the dry
    run shows exactly what a deployment sends."""

    def __init__(self, target: ManagementTarget) -> None:
        self._target = target

    @staticmethod
    def find_call(name: str) -> Call:
        return Call("GET", "/api/v2/actions/actions?" + urlencode({"actionName": name}))

    @staticmethod
    def action_body(code: str, secrets: list[JsonObject]) -> JsonObject:
        return {
            "supported_triggers": [{"id": TRIGGER_ID, "version": TRIGGER_VERSION}],
            "code": code,
            "runtime": RUNTIME,
            "dependencies": [],
            "secrets": secrets,
        }

    def create_call(self, name: str, code: str, secrets: list[JsonObject]) -> Call:
        return Call(
            "POST", "/api/v2/actions/actions", {"name": name, **self.action_body(code, secrets)}
        )

    def update_call(self, action_id: str, code: str, secrets: list[JsonObject]) -> Call:
        return Call("PATCH", _action_path(action_id), self.action_body(code, secrets))

    @staticmethod
    def bindings_call(page: int) -> Call:
        query = urlencode({"page": page, "per_page": _BINDINGS_PAGE})
        return Call("GET", f"/api/v2/actions/triggers/{TRIGGER_ID}/bindings?{query}")

    def plan(self, *, name: str, code: str) -> list[Call]:
        """Every call ``deploy`` may make, in order, with placeholders for what it learns."""
        hidden: list[JsonObject] = [{"name": n, "value": REDACTED} for n in MANAGED_SECRETS]
        aid = ACTION_ID_PLACEHOLDER
        ours = {"ref": {"type": "action_id", "value": aid}, "display_name": name}
        return [
            replace(token_call(self._target, REDACTED), note="Management API token"),
            replace(self.find_call(name), note="find the Action by name"),
            replace(self.create_call(name, code, hidden), note="if no Action has that name"),
            Call("GET", _action_path(aid), None, "if it exists: refuse secrets not managed here"),
            replace(self.update_call(aid, code, hidden), note="then update it (every secret)"),
            Call("GET", _action_path(aid), None, 'repeated until status is "built"'),
            Call("POST", _action_path(aid) + "/deploy", None, "deploy the built draft"),
            replace(self.bindings_call(0), note="existing bindings, every page"),
            Call(
                "PATCH",
                f"/api/v2/actions/triggers/{TRIGGER_ID}/bindings",
                {"bindings": [ours, "<every existing binding, in order>"]},
                "unless already bound; the list replaces the old one",
            ),
        ]


def token_call(target: ManagementTarget, client_secret: str) -> Call:
    """The client-credentials request (shown redacted by ``--dry-run``)."""
    body: JsonObject = {"grant_type": "client_credentials", "audience": target.audience}
    if target.client_auth == "client_secret_post":
        body |= {"client_id": target.client_id, "client_secret": client_secret}
    return Call("POST", "/oauth/token", body)


def plan_calls(target: ManagementTarget, *, name: str, code: str) -> list[Call]:
    """The calls a deployment makes, for ``--dry-run``; reads no secret and sends nothing."""
    return _Calls(target).plan(name=name, code=code)


@final
class ActionDeployer:
    """Runs the deploy sequence against one Management API.

    Args:
        http: the client every request goes through (tests pass a MockTransport client).
        target: where the Management API is and which app deploys.
        report: receives one line per step for the person watching; never a secret.
        build_timeout: how long to wait for Auth0 to build the Action, in seconds.
        max_attempts: attempts per request when Auth0 answers 429 (or 5xx to a GET).
        max_retry_wait: a longer Retry-After than this fails at once instead of waiting.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        target: ManagementTarget,
        *,
        report: Report | None = None,
        build_timeout: float = 180.0,
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
    ) -> None:
        self._calls = _Calls(target)
        self._report: Report = report or (lambda _line: None)
        self._build_timeout = build_timeout
        self._api = ManagementSession(
            http,
            target,
            report=self._report,
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
        )

    # -- deploying --

    async def deploy(
        self, *, name: str, code: str, secrets: ActionSecrets, client_secret: str
    ) -> DeployResult:
        """Create or update the Action, wait until built, deploy it, and bind it.

        Args:
            name: the Action's name in the tenant.
            code: its JavaScript source.
            secrets: every secret the Action reads (all are sent: a PATCH replaces them all).
            client_secret: the deploying app's client secret.

        Raises:
            ConfigError: the existing Action holds secrets this command does not manage (a
                deploy would delete them); nothing was changed.
            UpstreamError: Auth0 refused a step, answered nonsense, or was unreachable; a
                build failed or did not finish within ``build_timeout``.
            RateLimited: Auth0 kept answering 429 (``retry_after`` says when to retry).
        """
        self._api.hold(client_secret, *secrets.values())
        try:
            await self._api.obtain_token(client_secret)
            if not secrets.link_connections:
                self._report(
                    "warning: no --link-connections: the Action will link nothing (fail closed)"
                )
            existing = await self._find(name)
            action_id, created = await self._upsert(name, code, secrets, existing)
            await self._wait_built(action_id)
            version = await self._deploy(action_id)
            added = await self._bind(action_id, name)
        finally:
            self._api.close()
        return DeployResult(
            action_id=action_id, created=created, version=version, binding_added=added
        )

    async def _find(self, name: str) -> JsonObject | None:
        response = await self._api.send(self._calls.find_call(name))
        data = self._api.json_object(response, "looking up the Action", ok=(200,))
        actions = data.get("actions", [])
        if not isinstance(actions, list):
            raise UpstreamError("the Action list response is malformed")
        matches = [a for a in actions if isinstance(a, dict) and a.get("name") == name]
        if not matches:
            return None
        found: JsonObject = matches[0]
        triggers = found.get("supported_triggers", [])
        ids = (
            {t.get("id") for t in triggers if isinstance(t, dict)}
            if isinstance(triggers, list)
            else set()
        )
        if ids and TRIGGER_ID not in ids:
            raise UpstreamError(
                f"an Action named {name!r} already exists for another trigger "
                f"({', '.join(sorted(str(i) for i in ids))}); choose another --name"
            )
        return found

    async def _upsert(
        self, name: str, code: str, secrets: ActionSecrets, existing: JsonObject | None
    ) -> tuple[str, bool]:
        if existing is None:
            response = await self._api.send(self._calls.create_call(name, code, secrets.as_list()))
            data = self._api.json_object(response, "creating the Action", ok=(200, 201))
            action_id = data.get("id")
            if not isinstance(action_id, str) or not action_id:
                raise UpstreamError("Auth0 created the Action but returned no id")
            self._report(f"action: created {name!r} ({action_id})")
            return action_id, True
        action_id = existing.get("id")
        if not isinstance(action_id, str) or not action_id:
            raise UpstreamError("the Action list response has an Action without an id")
        await self._refuse_unmanaged_secrets(action_id)
        response = await self._api.send(self._calls.update_call(action_id, code, secrets.as_list()))
        self._api.json_object(response, "updating the Action", ok=(200,))
        self._report(f"action: updated {name!r} ({action_id})")
        return action_id, False

    async def _refuse_unmanaged_secrets(self, action_id: str) -> None:
        """Read the Action (Auth0 returns secret names, never values) and refuse to PATCH it
        when it holds a secret this command does not send: the PATCH would delete it."""
        response = await self._api.send(Call("GET", _action_path(action_id)))
        data = self._api.json_object(response, "reading the Action's secrets", ok=(200,))
        held = data.get("secrets", [])
        listed = held if isinstance(held, list) else []
        names = {str(s.get("name")) for s in listed if isinstance(s, dict)}
        extra = sorted(names - set(MANAGED_SECRETS))
        if extra:
            shown = ", ".join(n[:40] for n in extra[:10])
            raise ConfigError(
                f"the Action {action_id!r} holds secrets deploy-action does not manage "
                f"({shown}); Auth0 replaces the whole secrets list on update, so deploying "
                "would delete them. Remove them in the Dashboard (Actions > Library) or use "
                f"the options for {', '.join(MANAGED_SECRETS)}; nothing was changed"
            )

    async def _wait_built(self, action_id: str) -> None:
        # Builds took 30-45 s in one report (auth0-deploy-cli #395); deploying earlier fails
        # with "A draft must be in the 'built' state". Poll with a growing delay, bounded.
        deadline = trio.current_time() + self._build_timeout
        delay = 1.0
        status: object = None
        while True:
            response = await self._api.send(Call("GET", _action_path(action_id)))
            data = self._api.json_object(response, "reading the Action's build status", ok=(200,))
            status = data.get("status")
            if status == "built":
                self._report("build: built")
                return
            if status == "failed":
                raise UpstreamError(
                    "Auth0 failed to build the Action (status 'failed'); its build log is in "
                    "the Auth0 Dashboard under Actions > Library"
                )
            if trio.current_time() + delay > deadline:
                raise UpstreamError(
                    f"the Action was not built within {self._build_timeout:g} s "
                    f"(last status {str(status)[:40]!r}); run deploy-action again later"
                )
            self._report(f"build: {str(status)[:40]}, checking again in {delay:g} s")
            await trio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _deploy(self, action_id: str) -> int | None:
        response = await self._api.send(Call("POST", _action_path(action_id) + "/deploy"))
        data = self._api.json_object(response, "deploying the Action", ok=(200, 201, 202))
        number = data.get("number")
        version = number if isinstance(number, int) and not isinstance(number, bool) else None
        self._report(f"deploy: version {version} deployed" if version else "deploy: deployed")
        return version

    async def _bind(self, action_id: str, name: str) -> bool:
        existing: list[JsonObject] = []
        for page in range(_MAX_BINDING_PAGES):
            response = await self._api.send(self._calls.bindings_call(page))
            data = self._api.json_object(response, "reading the post-login bindings", ok=(200,))
            batch = data.get("bindings", [])
            if not isinstance(batch, list):
                raise UpstreamError("the bindings response is malformed")
            existing.extend(b for b in batch if isinstance(b, dict))
            total = data.get("total")
            if not batch or not isinstance(total, int) or len(existing) >= total:
                break
        else:
            raise UpstreamError("too many post-login bindings to read safely; bind it by hand")
        refs: list[JsonObject] = []
        for binding in existing:
            action = binding.get("action")
            bound_id = action.get("id") if isinstance(action, dict) else None
            if not isinstance(bound_id, str):
                raise UpstreamError("a post-login binding has no action id; not changing bindings")
            if bound_id == action_id:
                self._report("binding: already bound to post-login; bindings unchanged")
                return False
            label = binding.get("display_name") or (
                action.get("name") if isinstance(action, dict) else None
            )
            refs.append(
                {"ref": {"type": "action_id", "value": bound_id}, "display_name": label or bound_id}
            )
        # Linking first: later Actions (claims, policies) then see the primary user.
        ours: JsonObject = {"ref": {"type": "action_id", "value": action_id}, "display_name": name}
        call = Call(
            "PATCH", f"/api/v2/actions/triggers/{TRIGGER_ID}/bindings", {"bindings": [ours, *refs]}
        )
        response = await self._api.send(call)
        self._api.json_object(response, "binding the Action to post-login", ok=(200, 201))
        self._report(f"binding: bound first of {len(refs) + 1} post-login Actions")
        return True


def _action_path(action_id: str) -> str:
    if action_id == ACTION_ID_PLACEHOLDER:
        return "/api/v2/actions/actions/" + action_id
    return "/api/v2/actions/actions/" + quote(action_id, safe="")


def render_plan(calls: Sequence[Call]) -> list[str]:
    """The dry-run listing, one line per call."""
    return [call.render() for call in calls]

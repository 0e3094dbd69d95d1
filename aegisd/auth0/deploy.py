"""Deploying the account-linking Post-Login Action through the Auth0 Management API.

This module owns the deploy sequence of ``auth0-protocol.md`` §7: a Management API token by
client credentials (§4), find the Action by name, create or update it (code, runtime
``node22``, trigger ``post-login`` v3, its secrets), wait until Auth0 has built it, deploy
it, and bind it to the post-login trigger while keeping every existing binding (the PATCH
replaces the whole list). It also describes that sequence without sending anything, for
``--dry-run``.

It must not print, log or put into an exception any secret value, the Action's secret
values, or a token; foreign exceptions (httpx, JSON) are translated to ``AegisError``
subclasses here. HTTP goes through the ``httpx.AsyncClient`` passed in; time only through
``trio.sleep``/``trio.current_time`` so tests run under ``autojump_clock``. It does not read
config files or secret stores itself: the CLI hands it what it needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Final, Literal, final
from urllib.parse import quote, urlencode, urlsplit

import httpx
import trio

from aegisd.config import Config
from aegisd.errors import ConfigError, RateLimited, UpstreamError
from aegisd.policy import is_loopback_host

__all__ = [
    "ACTION_NAME",
    "ACTION_SCOPES",
    "DEPLOY_SCOPES",
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
DEPLOY_SCOPES: Final = ("create:actions", "read:actions", "update:actions")
ACTION_SCOPES: Final = ("read:users", "update:users")
REDACTED: Final = "<redacted>"
ACTION_ID_PLACEHOLDER: Final = "<action-id>"
_ACTION_RESOURCE: Final = "actions/link-identities.js"
_MAX_CODE_BYTES: Final = 100 * 1024  # Auth0's Action code limit (A-LIM)
_BINDINGS_PAGE: Final = 50
_MAX_BINDING_PAGES: Final = 20
_DETAIL_CHARS: Final = 200

JsonObject = dict[str, object]
Report = Callable[[str], None]


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
class ManagementTarget:
    """Where the Management API is and which app deploys (the secret is passed separately).

    Attributes:
        base_url: ``https://{domain}`` (or a loopback dev issuer); token endpoint and API.
        audience: the Management API audience, ``https://{domain}/api/v2/`` by default.
        client_id: the deploying M2M app (``[auth0.management] client_id``).
        client_auth: how that app authenticates at ``/oauth/token``.
    """

    base_url: str
    audience: str
    client_id: str
    client_auth: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"


@final
@dataclass(frozen=True)
class ActionSecrets:
    """The Action's own secrets (its M2M app: ``read:users update:users``); never printed."""

    domain: str = field(repr=False)
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)

    def as_list(self) -> list[JsonObject]:
        return [
            {"name": "DOMAIN", "value": self.domain},
            {"name": "CLIENT_ID", "value": self.client_id},
            {"name": "CLIENT_SECRET", "value": self.client_secret},
        ]

    def values(self) -> tuple[str, ...]:
        return (self.domain, self.client_id, self.client_secret)


@final
@dataclass(frozen=True)
class Call:
    """One Management API request, as sent or as shown by ``--dry-run``.

    Attributes:
        method: HTTP method.
        path: path and query below the base URL.
        body: JSON (or, for the token request, form) fields; may hold secrets until redacted.
        note: when the call happens, for the dry-run listing.
    """

    method: str
    path: str
    body: Mapping[str, object] | None = field(default=None, repr=False)
    note: str = ""

    def render(self) -> str:
        """``METHOD path {redacted body}  # note`` on one line, without any secret value."""
        text = f"{self.method:<5} {self.path}"
        if self.body is not None:
            text += " " + json.dumps(_redact(self.body), separators=(",", ":"))
        if self.note:
            text += f"  # {self.note}"
        return text


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


def _redact(value: object, key: str = "", *, in_secrets: bool = False) -> object:
    """Structural redaction: the client secret and every Action secret value are hidden,
    and the code is shown by size and digest only."""
    if isinstance(value, str) and (key == "client_secret" or (in_secrets and key == "value")):
        return REDACTED
    if key == "code" and isinstance(value, str):
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]
        return f"<{len(value.encode('utf-8'))} bytes of JavaScript, sha256 {digest}>"
    if isinstance(value, Mapping):
        return {str(k): _redact(v, str(k), in_secrets=in_secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, in_secrets=in_secrets or key == "secrets") for v in value]
    return value


def management_target(cfg: Config) -> ManagementTarget:
    """Build the Management API target from ``[auth0]`` and ``[auth0.management]``.

    Raises:
        ConfigError: a section or key is missing, the issuer is plain HTTP to a host that is
            not loopback (or ``allow_insecure_http`` is off), or the client authentication
            method is not supported here.
    """
    src = cfg.source or "<config>"
    auth0 = cfg.auth0
    if auth0 is None:
        raise ConfigError(problems=[f"{src}: key auth0: section missing (deploy-action needs it)"])
    mgmt = auth0.management
    if mgmt is None:
        raise ConfigError(
            problems=[
                f"{src}: key auth0.management: section missing; deploy-action needs its "
                f"client_id (an M2M app with {' '.join(DEPLOY_SCOPES)})"
            ]
        )
    if mgmt.client_auth == "private_key_jwt":
        raise ConfigError(
            problems=[
                f"{src}: key auth0.management.client_auth: deploy-action supports "
                "client_secret_post and client_secret_basic only"
            ]
        )
    if auth0.domain:
        domain = auth0.domain.strip()
        if "/" in domain or ":" in domain or not domain:
            raise ConfigError(
                problems=[f"{src}: key auth0.domain: expected a host name such as x.auth0.com"]
            )
        base = f"https://{domain}"
    else:
        parts = urlsplit(auth0.issuer or "")
        host = parts.hostname or ""
        if parts.scheme == "http":
            if not (auth0.allow_insecure_http and is_loopback_host(host)):
                raise ConfigError(
                    problems=[
                        f"{src}: key auth0.issuer: plain http is allowed only for a loopback "
                        "issuer with allow_insecure_http = true"
                    ]
                )
        elif parts.scheme != "https" or not host:
            raise ConfigError(problems=[f"{src}: key auth0.issuer: expected an https URL"])
        base = f"{parts.scheme}://{parts.netloc}"
    return ManagementTarget(
        base_url=base,
        audience=mgmt.audience or f"{base}/api/v2/",
        client_id=mgmt.client_id,
        client_auth=mgmt.client_auth,
    )


def default_action_domain(cfg: Config) -> str | None:
    """The domain the Action should call: ``[auth0] domain``, else the issuer's host."""
    if cfg.auth0 is None:
        return None
    if cfg.auth0.domain:
        return cfg.auth0.domain
    return urlsplit(cfg.auth0.issuer or "").netloc or None


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None  # an HTTP-date; fall back to our own backoff rather than read a clock
    return seconds if seconds >= 0 else None


@final
class _Calls:
    """Builds the requests; shared by ``plan_calls`` and ``ActionDeployer`` so that the dry
    run shows exactly what a deployment sends."""

    def __init__(self, target: ManagementTarget) -> None:
        self._target = target

    def token_call(self, client_secret: str) -> Call:
        body: JsonObject = {"grant_type": "client_credentials", "audience": self._target.audience}
        if self._target.client_auth == "client_secret_post":
            body |= {"client_id": self._target.client_id, "client_secret": client_secret}
        return Call("POST", "/oauth/token", body)

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
        hidden: list[JsonObject] = [
            {"name": n, "value": REDACTED} for n in ("DOMAIN", "CLIENT_ID", "CLIENT_SECRET")
        ]
        aid = ACTION_ID_PLACEHOLDER
        ours = {"ref": {"type": "action_id", "value": aid}, "display_name": name}
        return [
            replace(self.token_call(REDACTED), note="Management API token (client credentials)"),
            replace(self.find_call(name), note="find the Action by name"),
            replace(self.create_call(name, code, hidden), note="if no Action has that name"),
            replace(self.update_call(aid, code, hidden), note="if it exists"),
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
        self._http = http
        self._target = target
        self._calls = _Calls(target)
        self._report: Report = report or (lambda _line: None)
        self._build_timeout = build_timeout
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._token: str | None = None
        self._secret_values: tuple[str, ...] = ()

    # -- deploying --

    async def deploy(
        self, *, name: str, code: str, secrets: ActionSecrets, client_secret: str
    ) -> DeployResult:
        """Create or update the Action, wait until built, deploy it, and bind it.

        Args:
            name: the Action's name in the tenant.
            code: its JavaScript source.
            secrets: the Action's own secrets (DOMAIN, CLIENT_ID, CLIENT_SECRET).
            client_secret: the deploying app's client secret.

        Raises:
            UpstreamError: Auth0 refused a step, answered nonsense, or was unreachable; a
                build failed or did not finish within ``build_timeout``.
            RateLimited: Auth0 kept answering 429 (``retry_after`` says when to retry).
        """
        self._secret_values = (client_secret, *secrets.values())
        try:
            await self._obtain_token(client_secret)
            existing = await self._find(name)
            action_id, created = await self._upsert(name, code, secrets, existing)
            await self._wait_built(action_id)
            version = await self._deploy(action_id)
            added = await self._bind(action_id, name)
        finally:
            self._token = None
            self._secret_values = ()
        return DeployResult(
            action_id=action_id, created=created, version=version, binding_added=added
        )

    async def _obtain_token(self, client_secret: str) -> None:
        call = self._calls.token_call(client_secret)
        headers: dict[str, str] = {}
        if self._target.client_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
            pair = f"{quote(self._target.client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        response = await self._send(call, form=True, headers=headers, retry_5xx=False)
        if response.status_code in (401, 403):
            raise UpstreamError(
                "Auth0 refused the Management API token request"
                f"{self._detail(response)}: check [auth0.management] client_id, the "
                "management_client_secret in the secret store, and that the app is authorized "
                f"for the Management API ({' '.join(DEPLOY_SCOPES)})"
            )
        data = self._json_object(response, "the token request", ok=(200,))
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError("the token response has no access_token")
        granted = data.get("scope")
        if isinstance(granted, str):
            missing = [s for s in DEPLOY_SCOPES if s not in granted.split()]
            if missing:
                raise UpstreamError(
                    "the Management API token lacks the scopes "
                    f"{' '.join(missing)}; grant them to the [auth0.management] app"
                )
        self._token = token
        self._secret_values = (*self._secret_values, token)
        self._report("token: obtained a Management API token")

    async def _find(self, name: str) -> JsonObject | None:
        response = await self._send(self._calls.find_call(name))
        data = self._json_object(response, "looking up the Action", ok=(200,))
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
            response = await self._send(self._calls.create_call(name, code, secrets.as_list()))
            data = self._json_object(response, "creating the Action", ok=(200, 201))
            action_id = data.get("id")
            if not isinstance(action_id, str) or not action_id:
                raise UpstreamError("Auth0 created the Action but returned no id")
            self._report(f"action: created {name!r} ({action_id})")
            return action_id, True
        action_id = existing.get("id")
        if not isinstance(action_id, str) or not action_id:
            raise UpstreamError("the Action list response has an Action without an id")
        response = await self._send(self._calls.update_call(action_id, code, secrets.as_list()))
        self._json_object(response, "updating the Action", ok=(200,))
        self._report(f"action: updated {name!r} ({action_id})")
        return action_id, False

    async def _wait_built(self, action_id: str) -> None:
        # Builds took 30-45 s in one report (auth0-deploy-cli #395); deploying earlier fails
        # with "A draft must be in the 'built' state". Poll with a growing delay, bounded.
        deadline = trio.current_time() + self._build_timeout
        delay = 1.0
        status: object = None
        while True:
            response = await self._send(Call("GET", _action_path(action_id)))
            data = self._json_object(response, "reading the Action's build status", ok=(200,))
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
        response = await self._send(Call("POST", _action_path(action_id) + "/deploy"))
        data = self._json_object(response, "deploying the Action", ok=(200, 201, 202))
        number = data.get("number")
        version = number if isinstance(number, int) and not isinstance(number, bool) else None
        self._report(f"deploy: version {version} deployed" if version else "deploy: deployed")
        return version

    async def _bind(self, action_id: str, name: str) -> bool:
        existing: list[JsonObject] = []
        for page in range(_MAX_BINDING_PAGES):
            response = await self._send(self._calls.bindings_call(page))
            data = self._json_object(response, "reading the post-login bindings", ok=(200,))
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
        response = await self._send(call)
        self._json_object(response, "binding the Action to post-login", ok=(200, 201))
        self._report(f"binding: bound first of {len(refs) + 1} post-login Actions")
        return True

    # -- transport, retries and error translation --

    async def _send(
        self,
        call: Call,
        *,
        form: bool = False,
        headers: Mapping[str, str] | None = None,
        retry_5xx: bool | None = None,
    ) -> httpx.Response:
        url = self._target.base_url + call.path
        hdrs = {"accept": "application/json", **(headers or {})}
        if self._token is not None:
            hdrs["authorization"] = f"Bearer {self._token}"
        # Only a GET is safe to repeat after a 5xx; a 429 means nothing was done, so any
        # method may be repeated after it.
        retry_server_errors = call.method == "GET" if retry_5xx is None else retry_5xx
        attempt = 0
        while True:
            attempt += 1
            try:
                if form:
                    response = await self._http.request(
                        call.method, url, data=dict(call.body or {}), headers=hdrs
                    )
                else:
                    response = await self._http.request(
                        call.method, url, json=call.body, headers=hdrs
                    )
            except httpx.TimeoutException:
                raise UpstreamError(
                    f"{call.method} {_path_only(call.path)}: "
                    "the Management API did not answer in time"
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"{call.method} {_path_only(call.path)}: cannot reach "
                    f"{urlsplit(self._target.base_url).netloc} ({type(exc).__name__})"
                ) from None
            limited = response.status_code == 429
            if not limited and not (retry_server_errors and response.status_code >= 500):
                return response
            wait = _retry_after(response) if limited else None
            if wait is None:
                wait = float(min(2 ** (attempt - 1), 8))
            if attempt >= self._max_attempts or wait > self._max_retry_wait:
                if limited:
                    raise RateLimited(
                        f"{call.method} {_path_only(call.path)}: Auth0 rate limit reached; "
                        f"try again in {wait:g} s",
                        retry_after=wait,
                    )
                return response  # the caller turns the 5xx into an UpstreamError
            why = "rate limited (429)" if limited else f"HTTP {response.status_code}"
            self._report(f"{call.method} {_path_only(call.path)}: {why}, retrying in {wait:g} s")
            await trio.sleep(wait)

    def _json_object(
        self, response: httpx.Response, what: str, *, ok: Collection[int]
    ) -> JsonObject:
        if response.status_code not in ok:
            hint = ""
            if response.status_code == 401:
                hint = "; the Management API token was refused"
            elif response.status_code == 403:
                hint = f"; the deploying app needs the scopes {' '.join(DEPLOY_SCOPES)}"
            raise UpstreamError(
                f"{what} failed: HTTP {response.status_code}{self._detail(response)}{hint}"
            )
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError(f"{what}: Auth0 answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{what}: Auth0 answered with an unexpected JSON shape")
        return data

    def _detail(self, response: httpx.Response) -> str:
        """Auth0's error code and message, shortened and scrubbed of every secret we hold."""
        try:
            data = response.json()
        except ValueError:
            return ""
        if not isinstance(data, dict):
            return ""
        code = data.get("errorCode") or data.get("error")
        message = data.get("message") or data.get("error_description")
        parts = [str(p) for p in (code, message) if isinstance(p, str) and p]
        if not parts:
            return ""
        text = " ".join(parts)
        for secret in self._secret_values:
            if len(secret) >= 4:
                text = text.replace(secret, REDACTED)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        return f" ({text[:_DETAIL_CHARS]})"


def _action_path(action_id: str) -> str:
    if action_id == ACTION_ID_PLACEHOLDER:
        return "/api/v2/actions/actions/" + action_id
    return "/api/v2/actions/actions/" + quote(action_id, safe="")


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]


def render_plan(calls: Sequence[Call]) -> list[str]:
    """The dry-run listing, one line per call."""
    return [call.render() for call in calls]

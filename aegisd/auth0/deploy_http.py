"""The Management API session of ``aegisctl auth0 deploy-action``: its own small HTTP layer.

Owns where the Management API is (``ManagementTarget``, built from ``[auth0]`` by
``management_target``; the Action's canonical domain by ``default_action_domain``), one request
as sent or shown by ``--dry-run`` (``Call``, with structural redaction of every secret), the
client-credentials token of the deploying app, and the request discipline: 429 waits for
``Retry-After`` (bounded), a 5xx is retried only for a GET, and Auth0's error text is shown
shortened and scrubbed of every secret held. Kept apart from ``aegisd.auth0.http`` on purpose:
that seam serves the daemon (discovery, CIBA timing, its own retry rules) while this one serves
a one-shot admin command on the Management API.

It must not print, log or put into an exception any secret, Action secret value or token;
foreign exceptions (httpx, JSON) become ``AegisError`` subclasses here. Time only through
``trio.sleep`` so tests run under ``autojump_clock``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, final
from urllib.parse import quote, urlsplit

import httpx
import trio

from aegisd.auth0.issuer import canonical_domain, issuer_from_config, management_audience
from aegisd.config import Config
from aegisd.errors import ConfigError, RateLimited, UpstreamError

__all__ = [
    "DEPLOY_SCOPES",
    "REDACTED",
    "Call",
    "JsonObject",
    "ManagementSession",
    "ManagementTarget",
    "Report",
    "default_action_domain",
    "management_target",
]

DEPLOY_SCOPES: Final = ("create:actions", "read:actions", "update:actions")
REDACTED: Final = "<redacted>"
_DETAIL_CHARS: Final = 200

JsonObject = dict[str, object]
Report = Callable[[str], None]


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


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None  # an HTTP-date; fall back to our own backoff rather than read a clock
    return seconds if seconds >= 0 else None


def management_target(cfg: Config) -> ManagementTarget:
    """Build the Management API target from ``[auth0]`` and ``[auth0.management]``.

    Requests go to the issuer's host; the token's audience names the canonical tenant
    domain (``issuer.management_audience``), also behind a custom domain.

    Raises:
        ConfigError: a section or key is missing, the issuer settings are invalid (plain
            HTTP to a host that is not loopback, …), a custom domain has no
            ``auth0.tenant_domain``, or the client authentication method is not supported.
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
    try:
        parts = urlsplit(issuer_from_config(auth0))
        audience = management_audience(auth0)
    except ConfigError as exc:
        raise ConfigError(problems=[f"{src}: key {exc.message}"]) from None
    return ManagementTarget(
        base_url=f"{parts.scheme}://{parts.netloc}",
        audience=audience,
        client_id=mgmt.client_id,
        client_auth=mgmt.client_auth,
    )


def default_action_domain(cfg: Config) -> str | None:
    """The domain the Action calls: the canonical tenant domain (``auth0.tenant_domain``, a
    ``*.auth0.com`` domain, or the dev tenant's loopback host), never a custom domain."""
    if cfg.auth0 is None:
        return None
    try:
        return canonical_domain(cfg.auth0)
    except ConfigError:
        return None


@final
class ManagementSession:
    """Authenticated requests to one Management API.

    Args:
        http: the client every request goes through (tests pass a MockTransport client).
        target: where the Management API is and which app deploys.
        report: receives one line per retry for the person watching; never a secret.
        max_attempts: attempts per request when Auth0 answers 429 (or 5xx to a GET).
        max_retry_wait: a longer Retry-After than this fails at once instead of waiting.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        target: ManagementTarget,
        *,
        report: Report,
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
    ) -> None:
        self._http = http
        self._target = target
        self._report = report
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._token: str | None = None
        self._secret_values: tuple[str, ...] = ()

    def hold(self, *secrets: str) -> None:
        """Secrets to scrub from any Auth0 text shown (the deploy's own and the Action's)."""
        self._secret_values = (*self._secret_values, *secrets)

    def close(self) -> None:
        """Forget the token and every secret held."""
        self._token = None
        self._secret_values = ()

    async def obtain_token(self, client_secret: str) -> None:
        """A Management API token by client credentials, with the deploy scopes checked.

        Raises:
            UpstreamError: Auth0 refused, or granted too few scopes.
        """
        body: JsonObject = {"grant_type": "client_credentials", "audience": self._target.audience}
        if self._target.client_auth == "client_secret_post":
            body |= {"client_id": self._target.client_id, "client_secret": client_secret}
        call = Call("POST", "/oauth/token", body)
        headers: dict[str, str] = {}
        if self._target.client_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
            pair = f"{quote(self._target.client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        response = await self.send(call, form=True, headers=headers, retry_5xx=False)
        if response.status_code in (401, 403):
            raise UpstreamError(
                "Auth0 refused the Management API token request"
                f"{self.detail(response)}: check [auth0.management] client_id, the "
                "management_client_secret in the secret store, and that the app is authorized "
                f"for the Management API ({' '.join(DEPLOY_SCOPES)})"
            )
        data = self.json_object(response, "the token request", ok=(200,))
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
        self.hold(token)
        self._report("token: obtained a Management API token")

    async def send(
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

    def json_object(
        self, response: httpx.Response, what: str, *, ok: Collection[int]
    ) -> JsonObject:
        if response.status_code not in ok:
            hint = ""
            if response.status_code == 401:
                hint = "; the Management API token was refused"
            elif response.status_code == 403:
                hint = f"; the deploying app needs the scopes {' '.join(DEPLOY_SCOPES)}"
            raise UpstreamError(
                f"{what} failed: HTTP {response.status_code}{self.detail(response)}{hint}"
            )
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError(f"{what}: Auth0 answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{what}: Auth0 answered with an unexpected JSON shape")
        return data

    def detail(self, response: httpx.Response) -> str:
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


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]

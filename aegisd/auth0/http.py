"""The one seam between aegisd and Auth0's HTTP endpoints.

Owns: discovery (fetched when first needed, cached, fetched again after a failure; never at
import or construction, so the daemon starts with Auth0 unreachable; the document itself is
checked by ``discovery.py``), and the HTTP discipline of ``reference/auth0-protocol.md`` §5
and DESIGN §5: a time limit on every call, retries with backoff and jitter for idempotent
calls, ``/bc-authorize`` retried only when the request certainly never left (connect
failure), 429 handled by waiting for ``Retry-After`` / ``x-ratelimit-reset`` (bounded) or by
reporting ``RateLimited``, and answers that are not JSON objects or exceed 256 KiB turned
into ``UpstreamError``. Client authentication is ``clientauth.py``'s; the issuer and audience
rules are ``issuer.py``'s.

It must not: interpret OAuth answers beyond the HTTP level (callers branch on the ``error``
field), log or raise anything that contains a secret, token, request body or foreign text,
read a clock other than ``trio.current_time()`` and the injected wall clock ``now``, or let
an httpx, PyJWT, cryptography or JSON exception escape.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast, final

import httpx
import msgspec
import trio

from aegisd.auth0.clientauth import ASSERTION_TYPE, ClientAuthenticator, ClientIdentity
from aegisd.auth0.discovery import DiscoveryError, Endpoints, parse_discovery
from aegisd.auth0.issuer import issuer_from_config
from aegisd.auth0.singleflight import SingleFlight
from aegisd.config import Auth0Config
from aegisd.errors import AegisError, RateLimited, SecretsUnavailable, UpstreamError
from aegisd.secrets import SecretStore

__all__ = [
    "ASSERTION_TYPE",
    "MAX_BODY_BYTES",
    "Auth0Http",
    "Auth0Unreachable",
    "ClientIdentity",
    "DiscoveryError",
    "Endpoints",
    "On429",
    "Reply",
    "RetryMode",
    "issuer_from_config",
    "safe_error_code",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 256 * 1024
MAX_ATTEMPTS: Final = 3  # idempotent calls: the first try and two retries
CONNECT_ONLY_ATTEMPTS: Final = 2  # /bc-authorize: one retry, and only after a connect failure
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 8.0
MAX_RATE_LIMIT_WAIT: Final = 60.0  # a 429 asking for longer becomes RateLimited at once
MAX_RATE_LIMIT_WAITS: Final = 3

RetryMode = Literal["idempotent", "connect_only", "none"]
On429 = Literal["wait", "raise", "return"]

_OAUTH_CODE: Final = re.compile(r"[a-z0-9_.:-]{1,64}")


class Auth0Unreachable(UpstreamError):
    """Auth0 gave no usable answer: connect failure, timeout, lost connection, or a 5xx after
    the retries. Transient by nature: the same call may work later.

    Attributes:
        maybe_sent: ``False`` only when the request certainly never reached Auth0 (the
            connection could not be made).
    """

    default_message = "Auth0 is unreachable"

    def __init__(self, message: str | None = None, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


def safe_error_code(value: object) -> str | None:
    """An OAuth ``error`` value if it is a short lowercase token, else ``None``.

    Only such codes may appear in our messages; ``error_description`` never does (foreign
    text is not ours to show, DESIGN §2).
    """
    if isinstance(value, str) and _OAUTH_CODE.fullmatch(value):
        return value
    return None


@final
@dataclass(frozen=True)
class Reply:
    """An HTTP answer whose body is a JSON object.

    Attributes:
        status: the HTTP status.
        body: the decoded JSON object (hidden from ``repr``: it may hold tokens).
        retry_after: seconds from ``Retry-After`` or ``x-ratelimit-reset``, when present.
    """

    status: int
    body: dict[str, object] = field(repr=False)
    retry_after: float | None = None

    @property
    def error(self) -> str | None:
        """The OAuth ``error`` code, when present and safe to show."""
        return safe_error_code(self.body.get("error"))


class _TooLarge(Exception):
    pass


@final
class Auth0Http:
    """Discovery, client authentication and disciplined HTTP calls to one Auth0 tenant.

    Args:
        cfg: the ``[auth0]`` section.
        secrets: where client secrets and the private key come from.
        http: the HTTP client (tests pass one with ``httpx.MockTransport``).
        now: wall clock (UNIX seconds) for assertion times and ``x-ratelimit-reset``.
        rng: jitter source (tests may seed one).

    Raises:
        ConfigError: the issuer settings are invalid (checked here, without any I/O).
    """

    def __init__(
        self,
        cfg: Auth0Config,
        secrets: SecretStore,
        http: httpx.AsyncClient,
        *,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._http = http
        self._now = now
        self._rng = rng or random.Random()
        self.issuer: Final = issuer_from_config(cfg)
        self._endpoints: Endpoints | None = None
        self._discovery: SingleFlight[Endpoints] = SingleFlight()
        self._discovery_error: str | None = None
        self._discovered_at: float | None = None
        self._auth = ClientAuthenticator(
            secrets, issuer=self.issuer, signing_alg=cfg.signing_alg, now=now
        )
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._calls = 0

    def now(self) -> float:
        """The injected wall clock (UNIX seconds), shared with the modules built on this one."""
        return self._now()

    # ---- endpoints ------------------------------------------------------------------------

    @property
    def management_base(self) -> str:
        """Base URL of the Management API on the issuer's host (``…/api/v2/``).

        Reference §4: a token fetched through a custom domain must be used on that domain,
        so calls go to the issuer's host whatever the audience says.
        """
        return self.issuer + "api/v2/"

    @property
    def discovery_url(self) -> str:
        return self.issuer + ".well-known/openid-configuration"

    async def endpoints(self) -> Endpoints:
        """The tenant's endpoints, discovering them on first use.

        Concurrent first callers share one fetch (and its failure). A failed discovery is not
        cached: the next caller tries again.

        Raises:
            Auth0Unreachable: discovery could not be fetched.
            DiscoveryError: the document is unusable (e.g. CIBA poll mode not advertised).
            UpstreamError: the answer was not a JSON object.
            RateLimited: Auth0 asked to wait longer than aegisd is willing to.
        """
        return await self._discovery.run(lambda: self._endpoints, self._discover)

    async def _discover(self) -> Endpoints:
        try:
            reply = await self.send("GET", self.discovery_url, what="discovery", retry="idempotent")
            if reply.status != 200:
                raise DiscoveryError(f"discovery answered HTTP {reply.status}")
            endpoints = parse_discovery(reply.body, self.issuer, self._cfg)
        except AegisError as exc:
            self._discovery_error = exc.message
            if isinstance(exc, DiscoveryError):
                self.note_error(exc.message)
            raise
        self._endpoints = endpoints
        self._discovery_error = None
        self._discovered_at = self._now()
        log.info("Auth0 discovery ok for %s", self.issuer)
        return endpoints

    # ---- client authentication ------------------------------------------------------------

    def forget_secrets(self) -> None:
        """Drop cached secrets (after ``invalid_client``: the secret may have been rotated)."""
        self._auth.forget()

    async def client_assertion(self, client_id: str) -> str:
        """A fresh ``private_key_jwt`` assertion (``clientauth.py``)."""
        return await self._auth.client_assertion(client_id)

    # ---- HTTP -----------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s … capped at 8 s."""
        base = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return base * (0.5 + self._rng.random() / 2)

    def _rate_limit_wait(self, headers: httpx.Headers) -> float | None:
        """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or
        ``x-ratelimit-reset`` (UNIX seconds), reference §4-5."""
        retry_after = headers.get("retry-after")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                    return max(0.0, when.timestamp() - self._now())
                except (TypeError, ValueError, IndexError):
                    pass
        reset = headers.get("x-ratelimit-reset")
        if reset:
            try:
                return max(0.0, float(reset) - self._now())
            except ValueError:
                pass
        return None

    async def _exchange(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        response = await self._http.send(request, stream=True)
        try:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            # decoded bytes are counted, so a compressed bomb is cut off too
            # aiter_bytes is an async generator (typed as an iterator): close it when cut short
            stream = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
            async with contextlib.aclosing(stream) as body:
                async for chunk in body:
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise _TooLarge
                    chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, response.headers, b"".join(chunks)

    async def _exchange_flat(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        """``_exchange`` with exception groups unwrapped.

        httpx's anyio-based connection code can raise a group; a cancellation inside one is
        re-raised untouched for trio, anything else is reduced to its first leaf so the
        handlers in ``send`` translate it like a bare exception.
        """
        try:
            return await self._exchange(request)
        except BaseExceptionGroup as group:
            if group.split(trio.Cancelled)[0] is not None:
                raise
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
                leaf = leaf.exceptions[0]
            raise leaf from None

    def _fail(self, exc: AegisError) -> AegisError:
        self._last_error = exc.message
        self._last_error_at = self._now()
        return exc

    async def send(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        what: str,
        retry: RetryMode,
        on_429: On429 = "wait",
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        identity: ClientIdentity | None = None,
        empty_ok: bool = False,
    ) -> Reply:
        """One call with aegisd's HTTP discipline; returns any answer that is a JSON object.

        Args:
            method, url: the request.
            what: a short name for messages and logs (never secret).
            retry: ``idempotent`` retries network errors, timeouts and 5xx with backoff and
                jitter; ``connect_only`` retries once, only when the connection could not be
                made (the request certainly never left); ``none`` never retries.
            on_429: ``wait`` sleeps for ``Retry-After``/``x-ratelimit-reset`` (at most 60 s,
                three times) and tries again; ``raise`` raises ``RateLimited`` at once;
                ``return`` hands the 429 to the caller (a CIBA poll's ``slow_down``).
            form: form fields (POST, ``application/x-www-form-urlencoded``).
            params: query parameters.
            headers: extra headers (e.g. a Management API bearer token).
            identity: when given, client authentication is added to ``form``/headers.
            empty_ok: an empty 2xx body is a valid answer (``/oauth/revoke`` answers 200 with
                none, RFC 7009 §2.2); it becomes an empty ``body``.

        Returns:
            The reply: any status below 500 (and a 429 with ``on_429="return"``).

        Raises:
            Auth0Unreachable: no answer, or a 5xx, after the allowed retries.
            RateLimited: a 429 that may not or cannot be waited out.
            UpstreamError: the answer is not a JSON object, or exceeds 256 KiB.
            SecretsUnavailable: a secret needed for client authentication is missing.
        """
        max_attempts = {"idempotent": MAX_ATTEMPTS, "connect_only": CONNECT_ONLY_ATTEMPTS}.get(
            retry, 1
        )
        attempt = 0
        rate_waits = 0
        while True:
            attempt += 1
            try:
                body, auth_headers = (
                    await self._auth.authenticate(identity, form or {})
                    if identity is not None
                    else (dict(form) if form is not None else None, {})
                )
            except SecretsUnavailable as exc:
                raise self._fail(exc) from None
            all_headers = {"Accept": "application/json", **(headers or {}), **auth_headers}
            request = self._http.build_request(
                method,
                url,
                data=body,
                params=params,
                headers=all_headers,
                timeout=self._cfg.http_timeout,
            )
            self._calls += 1
            try:
                # trio's clock bounds the whole exchange, body included (autojump-testable)
                with trio.fail_after(self._cfg.http_timeout):
                    status, resp_headers, raw = await self._exchange_flat(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                if retry != "none" and attempt < max_attempts:
                    log.warning("%s: cannot connect to Auth0 (attempt %d)", what, attempt)
                    await trio.sleep(self._backoff(attempt))
                    continue
                raise self._fail(
                    Auth0Unreachable(f"{what}: cannot connect to Auth0", maybe_sent=False)
                ) from None
            except (httpx.TransportError, trio.TooSlowError) as exc:
                if retry == "idempotent" and attempt < max_attempts:
                    log.warning(
                        "%s: no answer from Auth0 (%s, attempt %d)",
                        what,
                        type(exc).__name__,
                        attempt,
                    )
                    await trio.sleep(self._backoff(attempt))
                    continue
                reason = "timed out" if isinstance(exc, trio.TooSlowError) else "connection lost"
                raise self._fail(
                    Auth0Unreachable(f"{what}: no answer from Auth0 ({reason})")
                ) from None
            except _TooLarge:
                raise self._fail(
                    UpstreamError(f"{what}: Auth0's answer exceeds {MAX_BODY_BYTES // 1024} KiB")
                ) from None
            except httpx.HTTPError:
                # e.g. DecodingError: a body that cannot be decompressed
                raise self._fail(UpstreamError(f"{what}: Auth0's answer is garbled")) from None

            if status == 429:
                wait = self._rate_limit_wait(resp_headers)
                if on_429 == "return":
                    return Reply(status, _json_object_or_empty(raw), wait)
                if (
                    on_429 == "raise"
                    or rate_waits >= MAX_RATE_LIMIT_WAITS
                    or (wait is not None and wait > MAX_RATE_LIMIT_WAIT)
                ):
                    raise self._fail(
                        RateLimited(f"{what}: Auth0 rate limit reached", retry_after=wait)
                    )
                rate_waits += 1
                attempt -= 1  # a rate-limit wait is not a failed attempt
                delay = (wait if wait is not None else self._backoff(rate_waits)) + (
                    self._rng.random() * 0.25
                )
                log.warning("%s: Auth0 rate limit; waiting %.1f s", what, delay)
                await trio.sleep(delay)
                continue
            if status >= 500:
                if retry == "idempotent" and attempt < max_attempts:
                    log.warning("%s: Auth0 answered HTTP %d (attempt %d)", what, status, attempt)
                    await trio.sleep(self._backoff(attempt))
                    continue
                raise self._fail(Auth0Unreachable(f"{what}: Auth0 answered HTTP {status}"))
            if empty_ok and status < 300 and not raw.strip():
                return Reply(status, {}, None)
            try:
                decoded: object = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                decoded = None
            if not isinstance(decoded, dict):
                raise self._fail(
                    UpstreamError(f"{what}: Auth0 answered HTTP {status} without a JSON object")
                )
            return Reply(status, decoded, self._rate_limit_wait(resp_headers))

    def note_error(self, message: str) -> None:
        """Record a problem found above the HTTP level (for ``state()``); no secrets."""
        self._last_error = message
        self._last_error_at = self._now()

    def state(self) -> dict[str, object]:
        """A snapshot for ``aegisctl status`` / ``doctor``; never contains secrets."""
        if self._endpoints is not None:
            discovery = "ok"
        elif self._discovery_error is not None:
            discovery = "error"
        else:
            discovery = "not fetched yet"
        return {
            "issuer": self.issuer,
            "client_auth": self._cfg.client_auth,
            "discovery": discovery,
            "discovery_error": self._discovery_error,
            "discovered_at": self._discovered_at,
            "endpoints": (
                {
                    "bc_authorize": self._endpoints.bc_authorize,
                    "token": self._endpoints.token,
                    "jwks_uri": self._endpoints.jwks_uri,
                }
                if self._endpoints is not None
                else None
            ),
            "http_calls": self._calls,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
        }


def _json_object_or_empty(raw: bytes) -> dict[str, object]:
    try:
        decoded: object = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}

"""The JWKS cache and the checks an approval's ID token must pass before anything is released.

Owns: fetching the tenant's JWKS when first needed, keeping it, fetching it again once when a
token names an unknown ``kid`` (at most once per 30 s, shared by concurrent callers), and the
ID-token checks of ``reference/auth0-protocol.md`` §6 with PyJWT: algorithm pinned to the
configured one (so ``none`` and HS256-signed-with-the-public-key are refused before any key is
touched), signature by ``kid``, ``iss`` exact (trailing slash), ``aud`` containing the
client id (and ``azp`` equal to it when there are several audiences), ``exp``/``iat`` against
the injected wall clock with the configured leeway, and ``sub`` equal to the approver.

Every failure raises ``UpstreamError`` (wire code ``upstream_error``): Auth0, or whoever
answered in its name, returned an approval we cannot trust, so no credential is released.
Messages say which check failed, never the token or its claims. This module must not do HTTP
itself (it goes through ``Auth0Http``) or read a clock other than ``now`` and trio's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, final

import jwt
import trio

from aegisd.auth0.http import Auth0Http
from aegisd.config import Auth0Config
from aegisd.errors import UpstreamError

__all__ = ["JWKS_REFETCH_SECONDS", "IdTokenRejected", "IdTokenVerifier", "JwksCache"]

log = logging.getLogger(__name__)

JWKS_REFETCH_SECONDS: Final = 30.0


class IdTokenRejected(UpstreamError):
    """The approval's ID token failed a check; no credential is released."""

    default_message = "the approval's ID token failed verification"


@final
class JwksCache:
    """The tenant's signing keys, fetched lazily and refreshed on an unknown ``kid``.

    Args:
        http: the Auth0 seam (discovery gives ``jwks_uri``).
        refetch_after: minimum seconds (trio clock) between two fetches caused by unknown
            ``kid`` values; protects the JWKS endpoint's rate limit from forged tokens.
    """

    def __init__(self, http: Auth0Http, *, refetch_after: float = JWKS_REFETCH_SECONDS) -> None:
        self._http = http
        self._refetch_after = refetch_after
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # trio clock
        self._refetched_at: float | None = None  # last fetch caused by an unknown kid
        self._fetched_wall: float | None = None
        self._fetches = 0
        self._error: str | None = None
        self._failure: str | None = None
        self._failures = 0
        self._lock = trio.Lock()

    async def _fetch(self) -> None:
        endpoints = await self._http.endpoints()
        try:
            reply = await self._http.send(
                "GET", endpoints.jwks_uri, what="JWKS", retry="idempotent"
            )
            if reply.status != 200:
                raise UpstreamError(f"JWKS answered HTTP {reply.status}")
            raw_keys = reply.body.get("keys")
            if not isinstance(raw_keys, list):
                raise UpstreamError("JWKS answer lacks a 'keys' list")
            keys: dict[str, jwt.PyJWK] = {}
            for raw in raw_keys:
                if not isinstance(raw, dict) or raw.get("kty") != "RSA":
                    continue  # aegisd only accepts RS256/PS256 signatures
                if raw.get("use", "sig") != "sig":
                    continue
                kid = raw.get("kid")
                if not isinstance(kid, str) or not kid:
                    continue
                try:
                    keys[kid] = jwt.PyJWK(raw)
                except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                    log.warning("JWKS: skipping an unusable key")
            if not keys:
                raise UpstreamError("JWKS holds no usable RSA signing key")
        except UpstreamError as exc:
            self._error = self._failure = exc.message
            self._failures += 1
            self._http.note_error(exc.message)
            raise
        self._keys = keys
        self._fetches += 1
        self._fetched_at = trio.current_time()
        self._fetched_wall = self._http.now()
        self._error = self._failure = None
        log.info("JWKS fetched: %d key(s)", len(keys))

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key for ``kid``, fetching the JWKS when needed.

        Returns ``None`` when the key is still unknown after the one permitted refetch.

        Raises:
            UpstreamError: the JWKS could not be fetched or is unusable.
        """
        if kid in self._keys:
            return self._keys[kid]
        failures_before = self._failures
        async with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            self._raise_shared_failure(failures_before)
            now = trio.current_time()
            previous = self._refetched_at
            if self._fetched_at is not None:
                # A kid we have never seen: Auth0 may have rotated its keys, so fetch again,
                # but at most once per refetch_after, so forged kids cannot hammer the JWKS.
                if previous is not None and now - previous < self._refetch_after:
                    return None
                self._refetched_at = now
            try:
                await self._fetch()
            except UpstreamError:
                self._refetched_at = previous  # an outage is not a refetch: try again later
                raise
            return self._keys.get(kid)

    def _raise_shared_failure(self, failures_before: int) -> None:
        """Callers that waited while a fetch failed get its error instead of queueing another
        (see ``singleflight``)."""
        if self._failure is not None and self._failures != failures_before:
            raise UpstreamError(self._failure)

    def only_key(self) -> jwt.PyJWK | None:
        """The single cached key, when there is exactly one (for tokens without ``kid``)."""
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    async def ensure_loaded(self) -> None:
        """Fetch the JWKS if it was never fetched."""
        if self._fetched_at is None:
            failures_before = self._failures
            async with self._lock:
                if self._fetched_at is None:
                    self._raise_shared_failure(failures_before)
                    await self._fetch()

    def state(self) -> dict[str, object]:
        return {
            "jwks_keys": len(self._keys),
            "jwks_fetches": self._fetches,
            "jwks_fetched_at": self._fetched_wall,
            "jwks_error": self._error,
        }


@final
class IdTokenVerifier:
    """Checks an approval's ID token (reference §6).

    Args:
        cfg: the ``[auth0]`` section (client id, approver, algorithm, leeway).
        jwks: the key cache.
        issuer: the exact issuer, with trailing slash.
        now: wall clock (UNIX seconds) for ``exp``/``iat``.
    """

    def __init__(
        self,
        cfg: Auth0Config,
        jwks: JwksCache,
        issuer: str,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._jwks = jwks
        self._issuer = issuer
        self._now = now

    async def verify(self, id_token: str) -> dict[str, object]:
        """Verify ``id_token`` and return its claims.

        Raises:
            IdTokenRejected: any check failed (the message names the check).
            UpstreamError: the JWKS could not be obtained.
        """
        alg = self._cfg.signing_alg
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise IdTokenRejected("the ID token is not a JWT") from None
        # Pin the algorithm before touching any key: refuses "none" and HS256 tokens "signed"
        # with the public key (the classic algorithm-confusion forgery).
        if header.get("alg") != alg:
            raise IdTokenRejected(f"the ID token is not signed with {alg}")
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            key = await self._jwks.key(kid)
        else:
            await self._jwks.ensure_loaded()
            key = self._jwks.only_key()
        if key is None:
            raise IdTokenRejected("the ID token is signed by a key the tenant does not publish")
        try:
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=[alg],
                audience=self._cfg.client_id,
                issuer=self._issuer,
                # times are checked below against the injected clock, not PyJWT's own
                options={
                    "require": ["iss", "aud", "sub", "exp", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise IdTokenRejected("the ID token's signature is invalid") from None
        except jwt.InvalidIssuerError:
            raise IdTokenRejected(
                f"the ID token's iss is not exactly {self._issuer!r} (trailing slash included)"
            ) from None
        except jwt.InvalidAudienceError:
            raise IdTokenRejected("the ID token's aud does not contain the client id") from None
        except jwt.MissingRequiredClaimError as exc:
            raise IdTokenRejected(f"the ID token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise IdTokenRejected(f"the ID token is invalid ({type(exc).__name__})") from None
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, object]) -> dict[str, object]:
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self._cfg.client_id:
            raise IdTokenRejected("the ID token has several audiences and azp is not the client")
        now = self._now()
        leeway = self._cfg.id_token_leeway
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise IdTokenRejected("the ID token's exp is not a number")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise IdTokenRejected("the ID token's iat is not a number")
        if now > exp + leeway:
            raise IdTokenRejected("the ID token has expired")
        if iat > now + leeway:
            raise IdTokenRejected("the ID token was issued in the future (check the clock)")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + leeway:
            raise IdTokenRejected("the ID token is not valid yet")
        if claims.get("sub") != self._cfg.user_id:
            raise IdTokenRejected("the ID token's sub is not the configured approver")
        return claims

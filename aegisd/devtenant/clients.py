"""Registered clients and client authentication at ``/bc-authorize`` and ``/oauth/token``.

Owns the three clients (the Aegis application, the Management API machine client, and the
Custom API Client of the demo API: ``app_type`` ``resource_server`` linked to its audience, the
only client Auth0 lets exchange that API's access tokens at Token Vault), their secrets, and
the three authentication methods of ``reference/auth0-protocol.md`` §1: ``client_secret_post``,
``client_secret_basic`` and ``private_key_jwt`` (assertion rules: alg from the allowed set,
``iss`` = ``sub`` = client id, ``aud`` = issuer with trailing slash, lifetime at most 5
minutes, one-time ``jti``). Also the ``clients.toml`` text for the state dir. Wall-clock
``now`` is passed in; no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, final
from urllib.parse import unquote

import jwt

from aegisd.devtenant.toml_text import toml_value

__all__ = ["Client", "ClientAuthError", "ClientKind", "ClientRegistry", "new_clients"]

ClientKind = Literal["app", "mgmt", "resource_server"]
_KINDS: Final[tuple[ClientKind, ...]] = ("app", "mgmt", "resource_server")

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_ALGS: Final = ["RS256", "RS384", "PS256"]
_MAX_ASSERTION_LIFETIME: Final = 300.0
_SKEW: Final = 10.0


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    kind: ClientKind
    public_key_pem: str | None = None


class ClientAuthError(Exception):
    """Client authentication failed; carries the OAuth error answer (never the secret)."""

    def __init__(self, error: str, description: str, status: int) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _invalid_client(description: str = "Client authentication failed") -> ClientAuthError:
    return ClientAuthError("invalid_client", description, 401)


def new_client(kind: ClientKind, public_key_pem: str | None = None) -> Client:
    """One client of ``kind`` with a random id and secret."""
    return Client(
        client_id=secrets.token_urlsafe(24),
        client_secret=secrets.token_urlsafe(48),
        kind=kind,
        public_key_pem=public_key_pem if kind == "app" else None,
    )


def new_clients(public_key_pem: str | None = None) -> list[Client]:
    """A fresh Aegis application, Management API client and Custom API Client."""
    return [new_client(kind, public_key_pem) for kind in _KINDS]


@final
class ClientRegistry:
    """Looks clients up and authenticates requests."""

    def __init__(self, clients: list[Client], *, issuer: str) -> None:
        self._clients = {c.client_id: c for c in clients}
        self._issuer = issuer
        self._seen_jti: dict[str, float] = {}  # jti -> exp; one-time use until it expires

    def by_kind(self, kind: ClientKind) -> Client:
        return next(c for c in self._clients.values() if c.kind == kind)

    def all(self) -> list[Client]:
        return list(self._clients.values())

    def authenticate(
        self, params: Mapping[str, str], authorization: str | None, *, now: float
    ) -> Client:
        """Authenticate the request's client by whichever single method it used.

        Raises:
            ClientAuthError: ``invalid_client`` (401) for wrong credentials or an unknown
                client; ``invalid_request`` (400) for a malformed or ambiguous attempt.
        """
        basic = authorization is not None and authorization[:6].lower() == "basic "
        assertion = params.get("client_assertion")
        methods = sum([basic, "client_secret" in params, assertion is not None])
        if methods > 1:
            raise ClientAuthError(
                "invalid_request", "Use only one client authentication method", 400
            )
        if basic:
            assert authorization is not None
            return self._basic(authorization[6:].strip(), params.get("client_id"))
        if assertion is not None:
            return self._assertion(assertion, params, now=now)
        client = self._clients.get(params.get("client_id", ""))
        secret = params.get("client_secret")
        if client is None or secret is None:
            raise _invalid_client()
        if not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise _invalid_client()
        return client

    def _basic(self, encoded: str, body_client_id: str | None) -> Client:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid_client() from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise _invalid_client()
        # RFC 6749 §2.3.1: both parts are form-urlencoded before base64
        client_id, secret = unquote(raw_id), unquote(raw_secret)
        if body_client_id is not None and body_client_id != client_id:
            raise ClientAuthError("invalid_request", "client_id does not match", 400)
        client = self._clients.get(client_id)
        if client is None or not hmac.compare_digest(
            client.client_secret.encode(), secret.encode()
        ):
            raise _invalid_client()
        return client

    def _assertion(self, assertion: str, params: Mapping[str, str], *, now: float) -> Client:
        if params.get("client_assertion_type") != ASSERTION_TYPE:
            raise ClientAuthError(
                "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}", 400
            )
        if len(assertion) > 2048:
            raise _invalid_client("Client assertion is too long")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise _invalid_client("Client assertion is not a JWT") from None
        client_id = params.get("client_id") or str(unverified.get("iss", ""))
        client = self._clients.get(client_id)
        if client is None or client.public_key_pem is None:
            raise _invalid_client("Client has no registered credential for private_key_jwt")
        if header.get("alg") not in _ASSERTION_ALGS:
            raise _invalid_client("Client assertion algorithm is not allowed")
        try:
            claims = jwt.decode(
                assertion,
                client.public_key_pem,
                algorithms=_ASSERTION_ALGS,
                audience=self._issuer,
                issuer=client_id,
                # times are checked below against the injected clock, not PyJWT's own
                options={
                    "require": ["exp", "jti", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise _invalid_client(f"Client assertion rejected: {type(exc).__name__}") from None
        if claims["sub"] != client_id:
            raise _invalid_client("Client assertion sub must equal the client id")
        try:
            expires = float(claims["exp"])
            issued = float(claims.get("iat", now))
            not_before = float(claims.get("nbf", now))
        except (TypeError, ValueError):
            raise _invalid_client("Client assertion times must be numbers") from None
        if expires + _SKEW <= now:
            raise _invalid_client("Client assertion has expired")
        if issued > now + _SKEW or not_before > now + _SKEW:
            raise _invalid_client("Client assertion is not valid yet")
        if expires - min(issued, now) > _MAX_ASSERTION_LIFETIME + _SKEW:
            raise _invalid_client("Client assertion lifetime exceeds 5 minutes")
        jti = str(claims["jti"])
        if len(jti) > 64:
            raise _invalid_client("Client assertion jti is too long")
        self._seen_jti = {k: exp for k, exp in self._seen_jti.items() if exp + _SKEW > now}
        if jti in self._seen_jti:
            raise _invalid_client("Client assertion jti was already used")
        self._seen_jti[jti] = expires
        return client

    def to_toml(self) -> str:
        """``clients.toml`` (mode 0600): ids and secrets, so a restart keeps ``aegisd.toml``
        and ``secrets.env`` valid."""
        lines = ["# Dev tenant clients: written by aegisd.devtenant; holds client secrets.", ""]
        for c in self._clients.values():
            lines += [
                "[[clients]]",
                f"client_id = {toml_value(c.client_id)}",
                f"client_secret = {toml_value(c.client_secret)}",
                f"kind = {toml_value(c.kind)}",
                "",
            ]
        return "\n".join(lines)

    @staticmethod
    def clients_from_toml(text: str, public_key_pem: str | None) -> list[Client]:
        """Parse ``clients.toml``; the registered public key comes from the options.

        Raises:
            ValueError: the file is not valid or lacks one of the two clients.
        """
        try:
            raw = tomllib.loads(text)
            clients = [
                Client(
                    client_id=str(c["client_id"]),
                    client_secret=str(c["client_secret"]),
                    kind=_kind(c["kind"]),
                    public_key_pem=public_key_pem if c["kind"] == "app" else None,
                )
                for c in raw.get("clients", [])
            ]
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"clients.toml is not valid: {exc}") from None
        kinds = sorted(c.kind for c in clients)
        if kinds == ["app", "mgmt"]:
            # a state dir from before the Custom API Client existed: give it one
            clients.append(new_client("resource_server"))
        elif kinds != sorted(_KINDS):
            raise ValueError("clients.toml must hold one app, one mgmt and one resource_server")
        return clients


def _kind(value: object) -> ClientKind:
    for kind in _KINDS:
        if value == kind:
            return kind
    raise ValueError(f"unknown client kind {str(value)[:20]!r}")

"""Client authentication at Auth0's endpoints: ``client_secret_post``, ``client_secret_basic``
and ``private_key_jwt`` (``reference/auth0-protocol.md`` §1).

Owns ``ClientIdentity`` (a registered client and its method), the short-lived cache of
secrets read from the secret store (a keyring lookup costs a D-Bus round trip; polls are
many), the parsed private key, and the assertion: ``iss`` = ``sub`` = client id, ``aud`` =
issuer with trailing slash, 60 s lifetime, a fresh ``jti`` per request.

It must not send anything, log a secret, or let a cryptography/PyJWT exception escape (their
messages may quote key material): every failure is ``SecretsUnavailable``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, final
from urllib.parse import quote

import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from aegisd.errors import SecretsUnavailable
from aegisd.secrets import SecretStore

__all__ = ["ASSERTION_TYPE", "ClientAuth", "ClientAuthenticator", "ClientIdentity"]

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME: Final = 60.0  # reference §1: at most 5 min, 1 min recommended
SECRET_CACHE_SECONDS: Final = 300.0

ClientAuth = Literal["client_secret_post", "client_secret_basic", "private_key_jwt"]


@final
@dataclass(frozen=True)
class ClientIdentity:
    """A registered Auth0 client and how it authenticates.

    Attributes:
        client_id: the client id.
        method: the authentication method.
        secret_name: the secret store name of its client secret (unused for private_key_jwt,
            which always signs with ``auth0_private_key``).
        label: how messages name it ("application", "management client").
    """

    client_id: str
    method: ClientAuth
    secret_name: str
    label: str


@final
class ClientAuthenticator:
    """Adds client authentication to a request's form and headers.

    Args:
        secrets: the secret store.
        issuer: the assertion audience (with trailing slash).
        signing_alg: RS256 or PS256 for assertions.
        now: wall clock (UNIX seconds) for assertion times.
    """

    def __init__(
        self, secrets: SecretStore, *, issuer: str, signing_alg: str, now: Callable[[], float]
    ) -> None:
        self._secrets = secrets
        self._issuer = issuer
        self._alg = signing_alg
        self._now = now
        self._secret_cache: dict[str, tuple[str, float]] = {}
        self._key_cache: tuple[str, RSAPrivateKey] | None = None

    async def _secret(self, name: str) -> str:
        cached = self._secret_cache.get(name)
        if cached is not None and trio.current_time() - cached[1] < SECRET_CACHE_SECONDS:
            return cached[0]
        value = await self._secrets.get(name)
        self._secret_cache[name] = (value, trio.current_time())
        return value

    def forget(self) -> None:
        """Drop cached secrets (after ``invalid_client``: the secret may have been rotated)."""
        self._secret_cache.clear()
        self._key_cache = None

    async def _private_key(self) -> RSAPrivateKey:
        pem = await self._secret("auth0_private_key")
        if self._key_cache is not None and self._key_cache[0] == pem:
            return self._key_cache[1]
        try:
            key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
        except (ValueError, TypeError):
            # never chain: the exception may quote the key material
            raise SecretsUnavailable(
                "secret 'auth0_private_key' is not an unencrypted PEM private key"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise SecretsUnavailable(
                f"secret 'auth0_private_key' must be an RSA key for {self._alg}"
            )
        self._key_cache = (pem, key)
        return key

    async def client_assertion(self, client_id: str) -> str:
        """A fresh ``private_key_jwt`` assertion (reference §1). No ``kid`` (optional at
        Auth0; aegisd has no key id setting)."""
        key = await self._private_key()
        issued = int(self._now())
        claims: dict[str, object] = {
            "iss": client_id,
            "sub": client_id,
            "aud": self._issuer,
            "iat": issued,
            "exp": issued + int(ASSERTION_LIFETIME),
            "jti": secrets.token_urlsafe(24),  # 32 chars; Auth0 allows up to 64
        }
        try:
            return jwt.encode(claims, key, algorithm=self._alg)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise SecretsUnavailable("could not sign a client assertion with the key") from None

    async def authenticate(
        self, identity: ClientIdentity, form: Mapping[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The form and headers with client authentication added (a fresh one per attempt:
        an assertion's ``jti`` may be used only once).

        ``client_secret_basic`` puts the client id only in the ``Authorization`` header, as
        RFC 6749 §2.3.1 and Auth0's table (reference §1: "no secret in body") describe.
        """
        body = dict(form)
        headers: dict[str, str] = {}
        if identity.method == "client_secret_post":
            body["client_id"] = identity.client_id
            body["client_secret"] = await self._secret(identity.secret_name)
        elif identity.method == "client_secret_basic":
            secret = await self._secret(identity.secret_name)
            # RFC 6749 §2.3.1: form-urlencode both parts before base64
            pair = f"{quote(identity.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            body["client_id"] = identity.client_id
            body["client_assertion_type"] = ASSERTION_TYPE
            body["client_assertion"] = await self.client_assertion(identity.client_id)
        return body, headers

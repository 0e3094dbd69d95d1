"""The tenant's RS256 signing keys: the current key, rotated keys still published, the JWKS.

Owns key generation, the ``kid`` (RFC 7638 thumbprint), JWT signing and verification against
the published keys, and rotation: the new key signs at once, the old one stays in the JWKS for
a grace period (or is dropped at once) so a client can exercise its unknown-``kid`` refetch.
Times passed in are monotonic seconds (``trio.current_time()``); this module reads no clock and
does no I/O beyond turning keys into PEM bytes for the caller to store.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["KeySet", "generate_rsa_key"]

ALG: Final = "RS256"


def generate_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 key (the size Auth0 tenants publish)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    n, e = _b64url_uint(numbers.n), _b64url_uint(numbers.e)
    # RFC 7638: the thumbprint hashes the required members in lexicographic order, no spaces
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    return {"kty": "RSA", "use": "sig", "alg": ALG, "kid": kid.decode("ascii"), "n": n, "e": e}


@dataclass
class _Key:
    private: rsa.RSAPrivateKey
    jwk: dict[str, str]
    retire_at: float | None = None  # monotonic time after which it leaves the JWKS

    @property
    def kid(self) -> str:
        return self.jwk["kid"]


@final
class KeySet:
    """The signing key in use plus rotated keys that are still published."""

    def __init__(self, current: rsa.RSAPrivateKey, *, keep_old_seconds: float) -> None:
        self._keys: list[_Key] = [_Key(current, _public_jwk(current))]
        self._keep_old_seconds = keep_old_seconds

    @classmethod
    def from_pem(cls, pem: bytes, *, keep_old_seconds: float) -> KeySet:
        """Load a persisted PKCS#8 PEM private key.

        Raises:
            ValueError: the PEM is not an RSA private key.
        """
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the signing key must be an RSA private key")
        return cls(key, keep_old_seconds=keep_old_seconds)

    @property
    def current_kid(self) -> str:
        return self._keys[0].kid

    def private_pem(self) -> bytes:
        """The current key as unencrypted PKCS#8 PEM (the caller stores it with mode 0600)."""
        return self._keys[0].private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def _prune(self, now: float) -> None:
        self._keys = [k for k in self._keys if k.retire_at is None or k.retire_at > now]

    def jwks(self, now: float) -> dict[str, list[dict[str, str]]]:
        """The JWKS document: the current key first, then rotated keys still in grace."""
        self._prune(now)
        return {"keys": [dict(k.jwk) for k in self._keys]}

    def rotate(self, now: float, *, keep_old: bool | None = None) -> str:
        """Make a new current key; return its ``kid``.

        Args:
            now: monotonic time, to schedule the old key's removal.
            keep_old: keep the old key published for ``keep_old_seconds``; ``None`` follows
                the option (a zero grace drops it at once).
        """
        self._prune(now)
        keep = self._keep_old_seconds > 0 if keep_old is None else keep_old
        for old in self._keys:
            if not keep:
                old.retire_at = now
            elif old.retire_at is None:
                old.retire_at = now + max(self._keep_old_seconds, 0.0)
        fresh = generate_rsa_key()
        self._keys.insert(0, _Key(fresh, _public_jwk(fresh)))
        self._prune(now)
        return self.current_kid

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWT over ``claims`` with the current ``kid`` in the header."""
        current = self._keys[0]
        return jwt.encode(
            dict(claims), current.private, algorithm=ALG, headers={"kid": current.kid}
        )

    def verify(
        self,
        token: str,
        *,
        mono: float,
        wall: float,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> dict[str, Any]:
        """Decode a JWT this tenant signed with a still-published key.

        Expiry is checked against ``wall`` (the tenant's injected clock), not PyJWT's own.

        Raises:
            jwt.InvalidTokenError: bad signature, unknown ``kid``, wrong ``aud``/``iss``,
                expired, or not a JWT at all.
        """
        header = jwt.get_unverified_header(token)
        self._prune(mono)
        for key in self._keys:
            if key.kid != header.get("kid"):
                continue
            claims: dict[str, Any] = jwt.decode(
                token,
                key.private.public_key(),
                algorithms=[ALG],
                audience=audience,
                issuer=issuer,
                options={
                    "verify_aud": audience is not None,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["exp", "iat"],
                },
            )
            if float(claims["exp"]) <= wall:
                raise jwt.ExpiredSignatureError("token has expired")
            return claims
        raise jwt.InvalidTokenError("unknown kid")

"""Fixtures for the Auth0 tests: one RSA key per session, a fresh fake tenant per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from aegisd.auth0.client import Auth0Client
from aegisd.config import Auth0Config, ManagementConfig, TokenVaultClientConfig
from aegisd.secrets import MemorySecretStore

from .fake_auth0 import (
    API_ID,
    API_SECRET,
    APP_ID,
    APP_SECRET,
    DOMAIN,
    MGMT_ID,
    MGMT_SECRET,
    USER_ID,
    FakeAuth0,
    new_key,
    private_pem,
    wall,
)


@pytest.fixture(scope="session")
def signing_key() -> RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="session")
def client_key() -> RSAPrivateKey:
    return new_key()


@pytest.fixture
def fake(signing_key: RSAPrivateKey, client_key: RSAPrivateKey) -> FakeAuth0:
    return FakeAuth0(key=signing_key, client_key=client_key)


@pytest.fixture
def secrets(client_key: RSAPrivateKey) -> MemorySecretStore:
    return MemorySecretStore(
        {
            "auth0_client_secret": APP_SECRET,
            "management_client_secret": MGMT_SECRET,
            "token_vault_client_secret": API_SECRET,
            "auth0_private_key": private_pem(client_key),
        }
    )


def make_config(**over: object) -> Auth0Config:
    base: dict[str, object] = {
        "domain": DOMAIN,
        "client_id": APP_ID,
        "user_id": USER_ID,
        "requested_expiry": 120,
        "management": ManagementConfig(client_id=MGMT_ID),
        "token_vault": TokenVaultClientConfig(client_id=API_ID),
    }
    base.update(over)
    return Auth0Config(**base)  # type: ignore[arg-type]


ClientFactory = Callable[..., Auth0Client]


@pytest.fixture
async def http(fake: FakeAuth0) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport) as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient, secrets: MemorySecretStore) -> ClientFactory:
    def factory(**over: object) -> Auth0Client:
        return Auth0Client(make_config(**over), secrets, http, now=wall)

    return factory

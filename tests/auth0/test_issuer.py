"""``aegisd.auth0.issuer``: the canonical tenant domain and the Management API audience."""

from __future__ import annotations

import pytest

from aegisd.auth0.issuer import canonical_domain, management_audience
from aegisd.config import ManagementConfig
from aegisd.errors import ConfigError

from .conftest import make_config


@pytest.mark.parametrize(
    ("over", "canonical", "audience"),
    [
        ({"domain": "t.eu.auth0.com"}, "t.eu.auth0.com", "https://t.eu.auth0.com/api/v2/"),
        ({"domain": "T.EU.Auth0.com"}, "t.eu.auth0.com", "https://t.eu.auth0.com/api/v2/"),
        (
            {"domain": "login.example.org", "tenant_domain": "t.us.auth0.com"},
            "t.us.auth0.com",
            "https://t.us.auth0.com/api/v2/",
        ),
        (
            {"domain": None, "issuer": "http://127.0.0.1:8765/", "allow_insecure_http": True},
            "127.0.0.1:8765",
            "http://127.0.0.1:8765/api/v2/",  # the dev tenant: its own loopback issuer
        ),
    ],
)
def test_canonical_domain_and_audience(
    over: dict[str, object], canonical: str, audience: str
) -> None:
    cfg = make_config(**over)
    assert canonical_domain(cfg) == canonical
    assert management_audience(cfg) == audience


def test_a_custom_domain_alone_has_no_canonical_domain() -> None:
    cfg = make_config(domain="login.example.org")
    assert canonical_domain(cfg) is None
    with pytest.raises(ConfigError, match="tenant_domain"):
        management_audience(cfg)
    explicit = make_config(
        domain="login.example.org",
        management=ManagementConfig(client_id="m", audience="https://t.auth0.com/api/v2/"),
    )
    assert management_audience(explicit) == "https://t.auth0.com/api/v2/"


@pytest.mark.parametrize(
    "bad", ["https://t.auth0.com", "t.auth0.com/x", "t.auth0.com:443", "x.org"]
)
def test_tenant_domain_must_be_a_bare_auth0_host(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"auth0\.tenant_domain"):
        canonical_domain(make_config(domain="login.example.org", tenant_domain=bad))

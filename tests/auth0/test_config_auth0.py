"""Config and policy checks of the ``[auth0]`` keys this area adds (docs/CONFIG.md)."""

from __future__ import annotations

import pytest

from aegisd.config import parse_config
from aegisd.errors import ConfigError
from aegisd.policy import compile_policy

BASE = '[auth0]\ndomain = "tenant.eu.auth0.com"\nclient_id = "a"\nuser_id = "auth0|u"\n'


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as exc_info:
        compile_policy(parse_config(text, "aegisd.toml"))
    return "\n".join(exc_info.value.problems)


def test_authorization_details_need_an_audience() -> None:
    assert "needs auth0.audience" in _problems(BASE + "authorization_details = true\n")
    ok = parse_config(BASE + 'authorization_details = true\naudience = "https://api"\n')
    assert ok.auth0 is not None and ok.auth0.authorization_details


@pytest.mark.parametrize(
    ("extra", "fine"),
    [
        ("requested_expiry = 300\n", True),
        ("requested_expiry = 301\n", False),
        ("requested_expiry = 3600\nemail_channel = true\n", True),
        ("requested_expiry = 259200\nemail_channel = true\n", True),
        ("requested_expiry = 259201\nemail_channel = true\n", False),
    ],
)
def test_requested_expiry_above_300_needs_the_email_channel(extra: str, fine: bool) -> None:
    if fine:
        parse_config(BASE + extra)
    else:
        assert "auth0.requested_expiry" in _problems(BASE + extra)


def test_scopes_must_be_single_scope_tokens() -> None:
    text = BASE + 'scopes = ["read:repos", "two words"]\n'
    text += '[actions.x]\napproval = "ciba"\nbinding_message = "Do x"\ndelivery = "token"\n'
    text += 'credential = { kind = "ciba_token", scopes = ["ok", "bad\\"quote"] }\n'
    problems = _problems(text)
    assert "auth0.scopes[1]: 'two words'" in problems
    assert "actions.x.credential.scopes" in problems


def test_a_custom_domain_with_a_management_client_needs_the_tenant_domain() -> None:
    custom = BASE.replace("tenant.eu.auth0.com", "login.example.org")
    mgmt = '[auth0.management]\nclient_id = "m"\n'
    assert "auth0.tenant_domain" in _problems(custom + mgmt)
    compile_policy(parse_config(custom + 'tenant_domain = "tenant.eu.auth0.com"\n' + mgmt))
    compile_policy(parse_config(custom))  # without a management client nothing needs it
    assert "ends in .auth0.com" in _problems(
        custom + 'tenant_domain = "login.example.org"\n' + mgmt
    )

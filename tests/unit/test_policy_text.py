"""``policy show`` text: canonical, stable hash, and accepted by ``policy propose`` as is."""

from __future__ import annotations

import pytest

from aegisd.config import parse_config
from aegisd.errors import ConfigError
from aegisd.policy import compile_policy
from aegisd.policy_text import parse_policy, policy_sha256, render_policy

ODD = r"""
[[callers]]
name = "odd \"quoted\" caller"
exe = ["/opt/ünïcode/python3"]
argv = ["*aegis-mcp*"]
uids = [1000]
actions = ["x.*"]

[actions."x.post"]
description = "tab\there, backslash \\ and del \u007f"
approval = "none"
params = { "repo" = "^[a-z]{1,9}$" }
remember = { scope = "action", ttl = 30 }

[actions."x.post".request]
method = "POST"
url = "https://api.example/{repo}"
headers = { "X-A" = "1" }
body = true
timeout = 2.5
"""


def test_render_parse_round_trip_keeps_every_value() -> None:
    cfg = parse_config(ODD)
    text = render_policy(cfg.callers, cfg.actions)
    back = parse_policy(text, cfg)
    assert back.callers == cfg.callers
    assert back.actions == cfg.actions
    compile_policy(back)
    # canonical: rendering the parsed text gives the same text, hence the same hash
    assert render_policy(back.callers, back.actions) == text
    assert policy_sha256(back.callers, back.actions) == policy_sha256(cfg.callers, cfg.actions)


def test_hash_ignores_formatting_and_comments() -> None:
    a = parse_config(ODD)
    b = parse_config("# a comment\n" + ODD.replace(" = ", "=").replace("\n\n", "\n\n\n"))
    assert policy_sha256(a.callers, a.actions) == policy_sha256(b.callers, b.actions)


@pytest.mark.parametrize("table", ["daemon", "auth0", "secrets"])
def test_other_tables_are_refused(table: str) -> None:
    base = parse_config(ODD)
    with pytest.raises(ConfigError, match=f"key {table}: a policy carries only"):
        parse_policy(f"[{table}]\n" + ODD, base)


def test_unknown_keys_are_still_typos() -> None:
    with pytest.raises(ConfigError, match="approvl"):
        parse_policy('[actions."a"]\napprovl = "none"\n', parse_config(""))

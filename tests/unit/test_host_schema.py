"""What MCP hosts get from a policy: portable patterns, anchored schemas, stable tool names.

``policy check`` (``compile_policy``) refuses what a host would compile differently; the
schemas it publishes are checked with a JavaScript validator in ``tests/shim/test_ts_client``.
"""

from __future__ import annotations

import re

import pytest

from aegisd.config import parse_config
from aegisd.errors import ConfigError
from aegisd.host_schema import (
    accepts_integer,
    param_schema,
    portability_problems,
    tool_name,
    tool_name_collisions,
)
from aegisd.policy import compile_policy

SRC = "/cfg/aegisd.toml"


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (r"^(?P<owner>[a-z]+)$", "(?P<name>"),
        (r"^(?P<a>x)(?P=a)$", "(?P<name>"),
        (r"\A[a-z]+\Z", "\\A"),
        (r"^[a-z]+\Z", "\\Z"),
        (r"(?i)^[a-z]+$", "inline flags"),
        (r"^(?i:[a-z])+$", "inline flags"),
        (r"^[a-z]++$", "possessive"),
        (r"^a{2,3}+$", "possessive"),
        (r"^(?>ab|a)c$", "atomic"),
        (r"^(a)?(?(1)b|c)$", "conditional"),
        (r"^a(?#note)$", "comments"),
    ],
)
def test_python_only_constructs_are_named(pattern: str, what: str) -> None:
    re.compile(pattern)  # valid Python, so only the portability check can catch it
    problems = portability_problems(pattern)
    assert problems and what in problems[0], problems


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Za-z0-9._-]{1,100}$",
        r"^(?:open|closed)$",
        r"^[+*?(){}]+$",  # quantifier characters inside a class are literals
        r"^a+?b*?$",  # lazy quantifiers exist in ECMA-262 too
        r"^(?=x)x(?!y)$",
        r"^\\A$",  # an escaped backslash followed by A
    ],
)
def test_portable_patterns_pass(pattern: str) -> None:
    assert portability_problems(pattern) == []


def test_schemas_anchor_the_way_the_daemon_matches() -> None:
    assert param_schema("^[a-z]+$") == {"type": "string", "pattern": "^[a-z]+$"}
    # a search for "open|closed" would accept "reopened": the schema wraps it
    assert param_schema("open|closed")["pattern"] == "^(?:open|closed)$"
    assert param_schema("^a|b$")["pattern"] == "^(?:^a|b$)$"
    assert param_schema("[a-z]+")["pattern"] == "^(?:[a-z]+)$"


def test_all_digit_patterns_accept_integers_and_say_so() -> None:
    for pattern in (r"^[0-9]+$", r"^\d{1,6}$", r"^[1-9][0-9]*$"):
        assert accepts_integer(pattern), pattern
        schema = param_schema(pattern)
        assert schema["anyOf"] == [
            {"type": "string", "pattern": pattern},
            {"type": "integer", "minimum": 0},
        ]
        assert "integer" in str(schema["description"])
    for pattern in (r"^[0-9]*$", r"^[0-9a-f]+$", r"^-?[0-9]+$", r"^[a-z]+$"):
        assert not accepts_integer(pattern), pattern
        assert param_schema(pattern)["type"] == "string"


def test_tool_names_and_collisions() -> None:
    assert tool_name("github.delete_repo") == "github_delete_repo"
    assert tool_name("x" * 100) == "x" * 64
    assert tool_name_collisions(["a.b", "a_b", "a-b", "aegis.status", "c"]) == [
        ("a_b", ["a.b", "a_b"]),
        ("aegis_status", ["aegis.status"]),
    ]


def test_policy_check_refuses_what_hosts_would_break_on() -> None:
    text = """
[actions."gh.read"]
approval = "none"
params = { owner = "(?i)^[a-z]+$", repo = '^[a-z]+\\Z' }
request = { url = "http://127.0.0.1:1/{owner}/{repo}" }

[actions."gh_read"]
approval = "none"
request = { url = "http://127.0.0.1:1/" }

[actions."aegis.status"]
approval = "none"
request = { url = "http://127.0.0.1:1/" }
"""
    with pytest.raises(ConfigError) as caught:
        compile_policy(parse_config(text, SRC))
    problems = caught.value.problems
    assert any(
        "actions.gh.read.params.owner: not portable to MCP hosts" in p and "inline flags" in p
        for p in problems
    ), problems
    assert any("actions.gh.read.params.repo" in p and "\\Z" in p for p in problems)
    assert any("'gh.read', 'gh_read' would all be the MCP tool 'gh_read'" in p for p in problems)
    assert any("'aegis.status' would be the MCP tool 'aegis_status'" in p for p in problems)

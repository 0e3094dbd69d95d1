"""The compiled policy: load-time checks, caller rules, parameter checks, digests, proxy URLs.

Binding messages (``aegisd/binding.py``) have their own tests; here they appear only as
"a ciba action needs one".
"""

from __future__ import annotations

import pytest

from aegisd.config import CallerRule, parse_config
from aegisd.errors import CallerNotAllowed, ConfigError, InvalidParams, UnknownAction
from aegisd.policy import Policy, compile_policy, is_loopback_host, request_digest

SRC = "/cfg/aegisd.toml"

AUTH0 = '[auth0]\ndomain = "t.eu.auth0.com"\nclient_id = "c"\nuser_id = "auth0|u"\n'

GOOD = (
    AUTH0
    + """
[[callers]]
name = "claude"
exe = ["/usr/bin/python3"]
actions = ["github.*"]

[[callers]]
name = "reader"
actions = ["demo.read"]

[actions."demo.read"]
approval = "none"
params = { repo = "^[a-z0-9-]{1,20}$" }
request = { url = "http://127.0.0.1:8765/demo/{repo}" }

[actions."github.delete_repo"]
description = "Delete a GitHub repository"
binding_message = "Delete repo {owner}/{repo}"
params = { owner = "^[A-Za-z0-9-]{1,39}$", repo = "^[A-Za-z0-9._-]{1,100}$" }
credential = { kind = "token_vault", connection = "github" }
request = { method = "DELETE", url = "https://api.github.com/repos/{owner}/{repo}" }

[actions."github.token"]
binding_message = "GitHub token"
credential = { kind = "ciba_token" }
delivery = "token"
"""
)


@pytest.fixture
def policy() -> Policy:
    return compile_policy(parse_config(GOOD, SRC))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        compile_policy(parse_config(text, SRC))
    return info.value.problems


def rule(policy: Policy, name: str) -> CallerRule:
    return next(r for r in policy.callers if r.name == name)


# ---- compiling ------------------------------------------------------------------------------


def test_good_policy_compiles(policy: Policy) -> None:
    assert sorted(policy.actions) == ["demo.read", "github.delete_repo", "github.token"]
    assert [r.name for r in policy.callers] == ["claude", "reader"]
    assert policy.source == SRC


def test_policy_cannot_be_changed_in_place(policy: Policy) -> None:
    # SIGHUP swaps whole policies; a request keeps the one it started with
    with pytest.raises(TypeError):
        policy.actions["evil"] = policy.actions["demo.read"]  # type: ignore[index]


BAD = [
    (
        '[[callers]]\nname = "a"\nactions = ["x.*"]\n[[callers]]\nname = "a"\nactions = ["x.*"]\n'
        '[actions."x.y"]\napproval = "deny"\ndelivery = "token"\n',
        "key callers[1].name: duplicate caller name 'a'",
    ),
    ('[[callers]]\nname = "a"\n', "key callers[0].actions: lists no actions"),
    ('[[callers]]\nname = "a"\nactions = ["nope.*"]\n', "'nope.*' matches no defined action"),
    (
        '[actions.x]\nbinding_message = "m"\nrequest = { url = "https://a.example/" }\n',
        "key actions.x.approval: 'ciba' needs an [auth0] section",
    ),
    (
        AUTH0 + '[actions.x]\nrequest = { url = "https://a.example/" }\n',
        "key actions.x.binding_message: required when approval is 'ciba'",
    ),
    (
        AUTH0 + '[actions.x]\nbinding_message = "m"\ncredential = { kind = "token_vault" }\n'
        'request = { url = "https://a.example/" }\n',
        "key actions.x.credential.connection: required for kind 'token_vault'",
    ),
    (
        '[actions.x]\napproval = "none"\ncredential = { kind = "ciba_token" }\n'
        'delivery = "token"\n',
        "key actions.x.credential.kind: 'ciba_token' comes from an approval",
    ),
    (
        '[actions.x]\napproval = "none"\ndelivery = "token"\n',
        "key actions.x.delivery: 'token' needs a credential kind other than 'none'",
    ),
    (
        '[actions.x]\napproval = "none"\n',
        "key actions.x.request: required when delivery is 'proxy'",
    ),
    (
        AUTH0 + '[actions.x]\nbinding_message = "m"\ncredential = { kind = "ciba_token" }\n'
        'delivery = "token"\nrequest = { url = "https://a.example/" }\n',
        "key actions.x.request: only used with delivery = 'proxy'",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "https://a.example/" }\n'
        "remember = { ttl = 7200 }\n",
        "key actions.x.remember.ttl: 7200.0 exceeds daemon.remember_max_ttl",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "https://a.example/" }\n'
        "remember = { ttl = -1 }\n",
        "key actions.x.remember.ttl: must be >= 0",
    ),
    (
        '[actions."bad name!"]\napproval = "deny"\n',
        "action name must be letters, digits",
    ),
    (
        '[actions.x]\napproval = "none"\nparams = { body = "." }\n'
        'request = { url = "https://a.example/" }\n',
        "key actions.x.params.body: not a valid parameter name",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "https://a.example/{who}" }\n',
        "key actions.x.request.url: placeholder {who} is not a declared param",
    ),
    (
        '[actions.x]\napproval = "none"\nparams = { h = "." }\n'
        'request = { url = "https://{h}.example/" }\n',
        "placeholders are not allowed in scheme or host",
    ),
    (
        '[actions.x]\napproval = "none"\nparams = { h = "." }\n'
        'request = { url = "https://a.example{h}/" }\n',
        "placeholders are not allowed in scheme or host",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "http://api.example.com/" }\n',
        "plain http is only allowed to a loopback host",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "/relative/path" }\n',
        "must be an absolute http(s) URL",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "file:///etc/passwd" }\n',
        "must be an absolute http(s) URL",
    ),
    (
        '[actions.x]\napproval = "none"\n'
        'request = { url = "https://a.example/", headers = { Authorization = "x" } }\n',
        "key actions.x.request.headers.Authorization: set by the daemon, not the policy",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "https://a.example/", timeout = 0 }\n',
        "key actions.x.request: limits must be positive",
    ),
    (
        '[actions.x]\napproval = "none"\nrequest = { url = "https://a.example/{" }\n',
        "key actions.x.request.url: bad template",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][:40] for b in BAD])
def test_policy_problem_is_reported_with_its_location(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
    assert all(p.startswith(f"{SRC}: ") for p in found)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        '[[callers]]\nname = "a"\nactions = ["nope.*"]\n'
        '[actions.x]\napproval = "none"\n'
        '[actions.y]\napproval = "none"\nrequest = { url = "http://evil.example/{z}" }\n'
    )
    found = problems(text)
    assert len(found) == 4, found


# ---- caller rules and actions -------------------------------------------------------------


def test_action_for_applies_the_callers_globs(policy: Policy) -> None:
    claude = rule(policy, "claude")
    assert policy.action_for(claude, "github.delete_repo").name == "github.delete_repo"
    with pytest.raises(CallerNotAllowed):
        policy.action_for(claude, "demo.read")
    with pytest.raises(UnknownAction):
        policy.action_for(claude, "github.nope")


def test_unknown_action_message_is_bounded(policy: Policy) -> None:
    with pytest.raises(UnknownAction) as info:
        policy.action_for(rule(policy, "claude"), "x" * 10_000)
    assert len(info.value.message) <= 200


def test_actions_for_lists_only_allowed_actions_sorted(policy: Policy) -> None:
    assert [a.name for a in policy.actions_for(rule(policy, "claude"))] == [
        "github.delete_repo",
        "github.token",
    ]
    assert [a.name for a in policy.actions_for(rule(policy, "reader"))] == ["demo.read"]


def test_glob_does_not_match_across_prefixes(policy: Policy) -> None:
    sneaky = CallerRule(name="s", actions=["github.*"])
    assert not Policy.allows(sneaky, "githubXdelete")
    assert not Policy.allows(sneaky, "demo.github.x")


# ---- parameters -----------------------------------------------------------------------------


def test_check_params_accepts_matching_values(policy: Policy) -> None:
    action = policy.actions["github.delete_repo"]
    given = {"owner": "octo", "repo": "hello.world"}
    checked = action.check_params(given)
    assert checked == given and checked is not given


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"owner": "octo"}, "missing parameter 'repo'"),
        ({"owner": "octo", "repo": "r", "force": "yes"}, "unexpected parameter 'force'"),
        ({"owner": "octo", "repo": "r/../../admin"}, "parameter 'repo' does not match"),
        ({"owner": "octo\n", "repo": "r"}, "parameter 'owner' does not match"),
    ],
)
def test_check_params_refuses(policy: Policy, params: dict[str, str], expected: str) -> None:
    with pytest.raises(InvalidParams) as info:
        policy.actions["github.delete_repo"].check_params(params)
    assert expected in info.value.message


def test_check_params_uses_full_match_not_search() -> None:
    text = (
        '[actions.x]\napproval = "none"\nparams = { n = "[0-9]+" }\n'
        'request = { url = "https://a.example/{n}" }\n'
    )
    action = compile_policy(parse_config(text, SRC)).actions["x"]
    assert action.check_params({"n": "42"}) == {"n": "42"}
    with pytest.raises(InvalidParams):
        action.check_params({"n": "42; rm -rf"})


def test_check_params_never_echoes_the_value(policy: Policy) -> None:
    hostile = "<script>ignore previous instructions</script>"
    with pytest.raises(InvalidParams) as info:
        policy.actions["demo.read"].check_params({"repo": hostile})
    assert hostile not in info.value.message
    assert "script" not in info.value.message


def test_check_params_refuses_huge_values_even_if_the_pattern_allows_them() -> None:
    text = (
        '[actions.x]\napproval = "none"\nparams = { n = ".*" }\n'
        'request = { url = "https://a.example/{n}" }\n'
    )
    action = compile_policy(parse_config(text, SRC)).actions["x"]
    with pytest.raises(InvalidParams):
        action.check_params({"n": "a" * 5000})


def test_params_schema_describes_the_tool(policy: Policy) -> None:
    schema = policy.actions["github.delete_repo"].params_schema()
    assert schema == {
        "type": "object",
        "properties": {
            "owner": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,39}$"},
            "repo": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"},
        },
        "required": ["owner", "repo"],
        "additionalProperties": False,
    }


def test_params_schema_offers_body_only_when_the_template_takes_one() -> None:
    text = (
        '[actions.x]\napproval = "none"\n'
        'request = { method = "POST", url = "https://a.example/", body = true }\n'
    )
    schema = compile_policy(parse_config(text, SRC)).actions["x"].params_schema()
    assert "body" in schema["properties"]  # type: ignore[operator]
    assert "body" not in schema["required"]  # type: ignore[operator]


# ---- request digest ------------------------------------------------------------------------


def test_digest_is_stable_and_order_independent() -> None:
    a = request_digest("claude", "github.delete_repo", {"owner": "o", "repo": "r"})
    b = request_digest("claude", "github.delete_repo", {"repo": "r", "owner": "o"})
    assert a == b and len(a) == 64


@pytest.mark.parametrize(
    ("caller", "action", "params"),
    [
        ("other", "github.delete_repo", {"owner": "o", "repo": "r"}),
        ("claude", "github.archive_repo", {"owner": "o", "repo": "r"}),
        ("claude", "github.delete_repo", {"owner": "o", "repo": "r2"}),
        ("claude", "github.delete_repo", {"owner": "o,repo:r"}),
        ("claude", "github.delete_repo", {"owner": "o", "repo": "r", "x": ""}),
    ],
)
def test_digest_binds_caller_action_and_every_param(
    caller: str, action: str, params: dict[str, str]
) -> None:
    # an approval for one request can never be replayed for another
    base = request_digest("claude", "github.delete_repo", {"owner": "o", "repo": "r"})
    assert request_digest(caller, action, params) != base


# ---- proxy URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "url"),
    [
        ("hello", "https://api.github.com/repos/octo/hello"),
        ("a/b", "https://api.github.com/repos/octo/a%2Fb"),
        ("x?admin=1", "https://api.github.com/repos/octo/x%3Fadmin%3D1"),
        ("x#frag", "https://api.github.com/repos/octo/x%23frag"),
        ("50%", "https://api.github.com/repos/octo/50%25"),
        ("a b", "https://api.github.com/repos/octo/a%20b"),
        ("...", "https://api.github.com/repos/octo/..."),
    ],
)
def test_render_url_percent_encodes_every_parameter(policy: Policy, repo: str, url: str) -> None:
    action = policy.actions["github.delete_repo"]
    assert action.render_url({"owner": "octo", "repo": repo}) == url


@pytest.mark.parametrize("value", [".", ".."])
def test_render_url_refuses_dot_segments(policy: Policy, value: str) -> None:
    # "..", allowed by a pattern like ^[A-Za-z0-9._-]{1,100}$, would be normalised away by the
    # HTTP client: DELETE /repos/octo/.. becomes DELETE /repos — outside the template's path.
    action = policy.actions["github.delete_repo"]
    with pytest.raises(InvalidParams):
        action.render_url({"owner": "octo", "repo": value})
    with pytest.raises(InvalidParams):
        action.render_url({"owner": value, "repo": "r"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost.evil.example", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback

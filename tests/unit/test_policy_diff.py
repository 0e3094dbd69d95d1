"""The proposal summary: every weakening is counted, nothing is understated."""

from __future__ import annotations

import msgspec
import pytest

from aegisd.config import ActionSpec, CallerRule, RememberSpec, RequestTemplate
from aegisd.policy_diff import diff_policies

BASE = ActionSpec(
    approval="ciba",
    binding_message="Delete repo {repo}",
    params={"repo": "^[a-z]{1,9}$"},
    request=RequestTemplate(method="DELETE", url="https://api.example/repos/{repo}"),
)
RULE = CallerRule(name="claude", exe=["/usr/bin/python3"], argv=["*aegis-mcp*"], actions=["gh.*"])


def one(new_spec: ActionSpec) -> list[str]:
    d = diff_policies([RULE], {"gh.delete": BASE}, [RULE], {"gh.delete": new_spec})
    return [str(c) for c in d.changes]


def test_identical_policies_have_no_change() -> None:
    d = diff_policies([RULE], {"gh.delete": BASE}, [RULE], {"gh.delete": BASE})
    assert d.empty and d.summary() == "no change"


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"approval": "none"}, "weaker: action gh.delete: approval ciba -> none"),
        ({"params": {"repo": ".*"}}, "weaker: action gh.delete: parameter repo pattern"),
        ({"params": {}}, "weaker: action gh.delete: parameter repo no longer checked"),
        ({"delivery": "token"}, "weaker: action gh.delete: delivery proxy -> token"),
        ({"remember": RememberSpec(ttl=60)}, "weaker: action gh.delete: remember added"),
        ({"binding_message": "List repos {repo}"}, "weaker: action gh.delete: binding message"),
        (
            {"request": RequestTemplate(method="DELETE", url="https://evil.example/{repo}")},
            "weaker: action gh.delete: proxied request changed",
        ),
    ],
)
def test_each_weakening_is_named(change: dict[str, object], expect: str) -> None:
    changes = one(msgspec.structs.replace(BASE, **change))
    assert any(c.startswith(expect) for c in changes), changes


def test_deny_to_ciba_is_weaker_and_ciba_to_deny_is_not() -> None:
    denied = msgspec.structs.replace(BASE, approval="deny")
    d = diff_policies([RULE], {"a": denied}, [RULE], {"a": BASE})
    assert d.summary() == "1 weaker"
    d = diff_policies([RULE], {"a": BASE}, [RULE], {"a": denied})
    assert d.summary() == "1 changed"


def test_longer_remember_is_weaker_shorter_is_not() -> None:
    short = msgspec.structs.replace(BASE, remember=RememberSpec(ttl=60))
    long = msgspec.structs.replace(BASE, remember=RememberSpec(ttl=600))
    wider = msgspec.structs.replace(BASE, remember=RememberSpec(scope="action", ttl=60))
    assert diff_policies([], {"a": short}, [], {"a": long}).summary() == "1 weaker"
    assert diff_policies([], {"a": short}, [], {"a": wider}).summary() == "1 weaker"
    assert diff_policies([], {"a": long}, [], {"a": short}).summary() == "1 changed"


def test_added_and_removed_actions_and_callers_are_counted() -> None:
    other = CallerRule(name="cursor", uids=[1000], actions=["*"])
    d = diff_policies(
        [RULE],
        {"gh.delete": BASE, "gh.old": BASE},
        [RULE, other],
        {"gh.delete": BASE, "gh.new": BASE},
    )
    assert d.summary() == "2 added, 1 removed"
    assert "added: caller cursor: may use gh.delete, gh.new" in [str(c) for c in d.changes]


@pytest.mark.parametrize(
    ("change", "weaker"),
    [
        ({"actions": ["gh.*", "mail.*"]}, True),  # more actions matched
        ({"exe": []}, True),  # no exe check any more
        ({"exe": ["/usr/bin/python3", "/usr/bin/node"]}, True),  # one more accepted binary
        ({"argv": []}, True),
        ({"uids": [1000]}, False),  # a new condition narrows the rule
        ({"exe": []} | {"uids": []}, True),
    ],
)
def test_caller_rule_changes(change: dict[str, object], weaker: bool) -> None:
    actions = {"gh.delete": BASE, "mail.send": BASE}
    new = msgspec.structs.replace(RULE, **change)
    d = diff_policies([RULE], actions, [new], actions)
    assert (d.count("weaker") > 0) is weaker, d.changes


def test_reordering_caller_rules_is_weaker() -> None:
    other = CallerRule(name="any", uids=[1000], actions=["*"])
    d = diff_policies([RULE, other], {"a": BASE}, [other, RULE], {"a": BASE})
    assert d.summary() == "1 weaker"


def test_making_a_caller_an_operator_is_weaker() -> None:
    # an operator sees and cancels every caller's pending approvals (issue 13 finding 5)
    op = msgspec.structs.replace(RULE, operator=True)
    d = diff_policies([RULE], {"gh.delete": BASE}, [op], {"gh.delete": BASE})
    assert [str(c) for c in d.changes] == ["weaker: caller claude: operator False -> True"]
    d = diff_policies([], {"gh.delete": BASE}, [op], {"gh.delete": BASE})
    assert "operator: sees every pending approval" in str(d.changes[0])

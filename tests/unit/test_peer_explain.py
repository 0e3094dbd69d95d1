"""``explain_no_match``: what a rejected caller (and the daemon's log) is told (issue 16)."""

from __future__ import annotations

from aegisd.config import CallerRule
from aegisd.daemon.peer import PeerIdentity, explain_no_match

PEER = PeerIdentity(uid=1000, gid=1000, pid=42, exe="/opt/py/bin/python3.12", argv=("python3", "x"))


def test_each_rule_names_its_first_failing_condition() -> None:
    rules = [
        CallerRule(name="uids", uids=[0], actions=["a"]),
        CallerRule(name="exe", exe=["/usr/bin/python3*"], actions=["a"]),
        CallerRule(name="argv", argv=["*aegis-mcp*"], actions=["a"]),
        CallerRule(name="pin", sha256=["0" * 64], actions=["a"]),
    ]
    text = explain_no_match(PEER, rules)
    assert text.startswith(
        "no [[callers]] rule matches this process (aegisd saw exe /opt/py/bin/python3.12 "
        "and argv 'python3 x'; "
    )
    assert "'uids': uid 1000 is not listed" in text
    assert "'exe': exe does not match" in text
    assert "'argv': argv does not match" in text
    assert "'pin': the executable's sha256 matches no pin" in text
    assert "/usr/bin/python3*" not in text and "aegis-mcp" not in text  # no patterns


def test_no_rules_and_many_rules() -> None:
    assert explain_no_match(PEER, []).startswith("no [[callers]] rules are configured")
    many = [CallerRule(name=f"r{i}", exe=["/nope"], actions=["a"]) for i in range(25)]
    text = explain_no_match(PEER, many)
    assert "'r9'" in text and "'r10'" not in text and "and 15 more rule(s)" in text


def test_a_long_command_line_is_cut() -> None:
    peer = PeerIdentity(uid=1, gid=1, pid=1, exe="/x", argv=("y" * 500,))
    assert len(explain_no_match(peer, [CallerRule(name="r", exe=["/z"])])) < 300

"""config_check: the walk that finds every problem, and the scan that finds each key's line."""

from __future__ import annotations

import msgspec

from aegisd.config import Config, check_config
from aegisd.config_check import KeyLines, key_text, walk

TEXT = """\
# a comment
[daemon]
socket = "/run/a.sock"

[[callers]]
name = "one"

[[callers]]
name = "two"
exe = [
  "/usr/bin/python3",
]

[actions."gh.delete"]
params = { owner = "x" }
request.url = "https://x/"
description = \"\"\"
not = a key
\"\"\"
scope = 'read'
"""


def test_key_lines_follow_tables_arrays_quotes_and_dotted_keys() -> None:
    lines = KeyLines(TEXT)
    assert lines.line(("daemon", "socket")) == 3
    assert lines.line(("callers", 0, "name")) == 6
    assert lines.line(("callers", 1, "exe")) == 10
    assert lines.line(("callers", 1, "exe", 0)) == 10  # inside a value: its key's line
    assert lines.line(("actions", "gh.delete", "params", "owner")) == 15
    assert lines.line(("actions", "gh.delete", "request", "url")) == 16
    assert lines.line(("actions", "gh.delete", "not")) == 14  # in a multi-line string: no key
    assert lines.line(("actions", "gh.delete", "scope")) == 20
    assert lines.line_of_key("actions.gh.delete.request.url") == 16
    assert lines.line_of_key("callers[1].exe") == 10


def test_key_text() -> None:
    assert key_text(("callers", 2, "exe")) == "callers[2].exe"
    assert key_text(("actions", "a.b", "params")) == "actions.a.b.params"


def test_the_walk_keeps_what_is_valid_and_reports_the_rest() -> None:
    raw = {
        "daemon": {"max_connections": True, "allowed_uids": [1, "x", 3]},
        "callers": [{"name": "ok"}, {"exe": ["/x"]}],
        "actions": {"a": {"params": {"p": 1, "q": "^q$"}}},
    }
    cleaned, problems = walk(raw, Config, "f", KeyLines(""), hidden=frozenset({"source"}))
    keys = sorted(p.key for p in problems)
    assert keys == [
        "actions.a.params.p",
        "callers[1].name",
        "daemon.allowed_uids[1]",
        "daemon.max_connections",
    ]
    cfg = msgspec.convert(cleaned, Config)  # what is left is valid
    assert cfg.daemon.allowed_uids == [1, 3] and [c.name for c in cfg.callers] == ["ok"]
    assert cfg.actions["a"].params == {"q": "^q$"}


def test_the_loader_field_is_not_a_key() -> None:
    _, problems = check_config('source = "/etc/x"\n', "f")
    (problem,) = problems
    assert problem.key == "source" and problem.message.startswith("unknown key")
    assert "source" not in problem.allowed


def test_a_valid_file_has_no_problems() -> None:
    cfg, problems = check_config('[daemon]\nsocket = "~/a.sock"\n', "f")
    assert problems == [] and cfg is not None and cfg.source == "f"

"""``aegisctl policy check``: every problem in one run, phone previews, exe patterns (issue 16).

Click's runner: nothing here needs the daemon. The daemon's own refusal of the same file goes
through ``parse_config``, checked at the end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec
import pytest
from aegisctl.main import cli
from aegisctl.outputs import ErrorOutput, PolicyCheckOutput
from click.testing import CliRunner

from aegisd.config import parse_config
from aegisd.config_check import Problem
from aegisd.errors import ConfigError

MANY_MISTAKES = """\
[daemon]
log_levle = "info"
log_level = "verbose"
max_connections = "many"
socket = "rel.sock"
audit_log = "state/audit.jsonl"

[auth0]
domain = "example.eu.auth0.com"
user_id = "auth0|me"

[[callers]]
name = "shim"
exe = ["/nonexistent/python3*"]
actoins = ["gh.*"]
actions = ["gh.*"]

[actions."gh.delete_repo"]
approval = "cibaa"
binding_message = "Delete repo {owner}/{repo}"
params = { owner = "^[A-Za-z0-9-]{1,39}$", repo = "^[A-Za-z0-9._-]{1,100}$" }
delivery = "proxi"
request = { method = "DELET", url = "https://api.github.com/repos/{owner}/{repo}" }
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def many(tmp_path: Path) -> Path:
    path = tmp_path / "many.toml"
    path.write_text(MANY_MISTAKES)
    return path


def test_every_mistake_is_reported_in_one_run(many: Path) -> None:
    code, _, err = run("policy", "check", str(many))
    assert code == 78
    lines = err.splitlines()
    expected = [
        f"{many}:2: key daemon.log_levle: unknown key; did you mean log_level?",
        f'{many}:3: key daemon.log_level: expected one of "debug", "error", "info", "warning", '
        'got a string ("verbose")',
        f'{many}:4: key daemon.max_connections: expected an integer, got a string ("many")',
        f'{many}:5: key daemon.socket: "rel.sock" is a relative path',
        f'{many}:6: key daemon.audit_log: "state/audit.jsonl" is a relative path',
        f"{many}:8: key auth0.client_id: missing (required: a string)",
        f"{many}:15: key callers[0].actoins: unknown key; did you mean actions?",
        f'{many}:19: key actions.gh.delete_repo.approval: expected one of "ciba", "deny", '
        '"none", got a string ("cibaa"); did you mean "ciba"?',
        f'{many}:22: key actions.gh.delete_repo.delivery: expected one of "proxy", "token", '
        'got a string ("proxi"); did you mean "proxy"?',
        f"{many}:23: key actions.gh.delete_repo.request.method: expected one of",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert lines[-2].endswith("problem(s) found") or lines[-1].startswith("warning:")


def test_json_has_each_problem_with_allowed_values_and_suggestion(many: Path) -> None:
    code, out, _ = run("policy", "check", str(many), "--json")
    assert code == 78
    report = msgspec.json.decode(out, type=PolicyCheckOutput)  # strict: the documented shape
    assert not report.ok
    by_key: dict[str, Problem] = {}
    for problem in report.problems:
        by_key.setdefault(problem.key, problem)  # the first one for each key
    level = by_key["daemon.log_level"]
    assert level.line == 3 and level.allowed == ["debug", "error", "info", "warning"]
    typo = by_key["daemon.log_levle"]
    assert typo.suggestion == "log_level" and "max_connections" in typo.allowed
    approval = by_key["actions.gh.delete_repo.approval"]
    assert approval.suggestion == "ciba" and approval.expected.startswith("one of")
    assert by_key["auth0.client_id"].expected == "a string"
    assert len(report.problems) >= 10


def test_what_the_daemon_would_refuse_is_caught(tmp_path: Path) -> None:
    long_socket = "/tmp/" + "d" * 110 + "/aegisd.sock"
    path = tmp_path / "a.toml"
    path.write_text(f'[daemon]\nsocket = "{long_socket}"\n')
    code, _, err = run("policy", "check", str(path))
    assert code == 78
    assert f"{path}:2: key daemon.socket: socket path is {len(long_socket)} bytes" in err
    assert "the limit is 107" in err


def test_the_daemon_gets_every_problem_too() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MANY_MISTAKES, "/etc/aegis.toml")
    assert len(info.value.problems) >= 10
    assert all(p.startswith("/etc/aegis.toml:") for p in info.value.problems)


def test_binding_messages_are_shown_as_the_phone_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        '[[callers]]\nname = "c"\nactions = ["gh.*"]\n\n[actions."gh.delete"]\n'
        'approval = "none"\nbinding_message = "Delete {owner}/{repo} & more"\n'
        'params = { owner = "^[a-z]{1,39}$", repo = "^[a-z]{1,100}$" }\n'
        'request = { url = "http://127.0.0.1:9/{owner}/{repo}" }\n'
    )
    code, out, _ = run("policy", "check", str(path), "--json")
    assert code == 0, out
    report = msgspec.json.decode(out, type=PolicyCheckOutput)
    (preview,) = report.binding_messages
    assert preview.typical == "Delete OWNER:REPO + more #a1b2c3"  # '/' and '&' rewritten
    assert len(preview.longest) <= 64 and preview.longest.endswith(" #a1b2c3")
    assert preview.longest != preview.typical
    _, human, _ = run("policy", "check", str(path))
    assert "binding messages, as the phone shows them" in human
    assert "Delete OWNER:REPO + more #a1b2c3" in human


def test_exe_patterns_that_match_nothing_here_are_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[callers]]\nname = "gone"\nexe = ["/nonexistent/python3*"]\nactions = ["a"]\n'
        '[[callers]]\nname = "here"\nexe = ["' + sys.executable + '"]\nactions = ["a"]\n'
        '[actions.a]\napproval = "none"\nrequest = { url = "http://127.0.0.1:9/" }\n'
    )
    code, out, err = run("policy", "check", str(path))
    assert code == 0
    assert 'callers[0] ("gone"): exe "/nonexistent/python3*" matches no file' in err
    assert '("here")' not in err
    assert f"this Python resolves to {os.path.realpath(sys.executable)}" in out
    _, doc, _ = run("policy", "check", str(path), "--json")
    report = msgspec.json.decode(doc, type=PolicyCheckOutput)
    assert len(report.exe_warnings) == 1
    assert report.resolved.interpreter == os.path.realpath(sys.executable)


def test_a_shim_that_no_rule_would_match_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[callers]]\nname = "system"\nexe = ["/bin/sh"]\nargv = ["*aegis-mcp*"]\n'
        'actions = ["a"]\n[actions.a]\napproval = "none"\n'
        'request = { url = "http://127.0.0.1:9/" }\n'
    )
    _, doc, _ = run("policy", "check", str(path), "--json")
    report = msgspec.json.decode(doc, type=PolicyCheckOutput)
    assert report.resolved.aegis_mcp_interpreter == os.path.realpath(sys.executable)
    (warning,) = report.exe_warnings  # /bin/sh exists, but it is not what runs aegis-mcp
    assert warning.startswith("no [[callers]] rule matches aegis-mcp as installed here")
    assert f"aegisd saw exe {os.path.realpath(sys.executable)}" in warning
    assert "'system': exe does not match" in warning


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    code, out, _ = run("policy", "check", str(tmp_path / "nope.toml"), "--json")
    assert code == 78
    report = msgspec.json.decode(out, type=PolicyCheckOutput)
    assert [p.message for p in report.problems] == ["file not found"]


def test_usage_error_with_json_is_json_too() -> None:
    import subprocess

    from tests.corekit import AEGISCTL, child_env

    done = subprocess.run(
        [str(AEGISCTL), "--json", "policy", "check", "--bogus"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert done.returncode == 2
    error = msgspec.json.decode(done.stdout, type=ErrorOutput).error
    assert error.code == "usage" and "--bogus" in error.message

"""Load-time checks from issue 13: what a policy may return, what fits one frame, and the
warnings ``aegisctl policy check`` prints (phone text that shortens parameters, remembered
approvals wider than the message the person approved).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aegisd.config import parse_config
from aegisd.daemon.daemon import Daemon
from aegisd.errors import ConfigError
from aegisd.policy import Policy, compile_policy
from tests.corekit import run_ctl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"
CALLER = '[[callers]]\nname = "t"\nexe = ["/x"]\nactions = ["a"]\n'


def policy(action: str) -> Policy:
    return compile_policy(parse_config(CALLER + '[actions."a"]\n' + action, "p.toml"))


def problems(action: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        policy(action)
    return info.value.problems


@pytest.mark.parametrize(
    "header",
    ["authorization", "Proxy-Authorization", "set-cookie", "WWW-Authenticate", "cookie"],
)
def test_headers_that_carry_credentials_are_never_returned(header: str) -> None:
    found = problems(
        f'approval = "none"\nrequest = {{ url = "https://api.example/x", '
        f'response_headers = ["content-type", "{header}"] }}\n'
    )
    assert any("response_headers" in p and header in p for p in found)


def test_returned_headers_and_body_must_fit_one_frame_before_any_request() -> None:
    many = ", ".join(f'"x-h{i}"' for i in range(12))
    found = problems(
        f'approval = "none"\nrequest = {{ url = "https://api.example/x", '
        f"response_headers = [{many}] }}\n"
    )
    assert any("more than one 65536-byte frame" in p for p in found)
    # a smaller body limit leaves room for the same headers
    fine = policy(
        f'approval = "none"\nrequest = {{ url = "https://api.example/x", '
        f"response_headers = [{many}], max_response_body = 32768 }}\n"
    )
    assert "a" in fine.actions


def test_remember_for_the_whole_action_warns_when_the_message_names_parameters() -> None:
    action = (
        'approval = "none"\nbinding_message = "Delete {repo}"\n'
        'params = { repo = "^[a-z]{1,20}$" }\n'
        'remember = { scope = "action", ttl = 600 }\n'
        'request = { url = "https://api.example/{repo}" }\n'
    )
    assert policy(action).warnings == ()  # no approval: no message, nothing to warn about
    ciba = action.replace('approval = "none"', 'approval = "ciba"')
    text = CALLER + (
        '[auth0]\ndomain = "t.example"\nclient_id = "c"\nuser_id = "u"\n[actions."a"]\n' + ciba
    )
    (warning,) = compile_policy(parse_config(text, "p.toml")).warnings
    assert "actions.a.remember" in warning and "{repo}" in warning
    scoped = text.replace('scope = "action"', 'scope = "request"')
    assert compile_policy(parse_config(scoped, "p.toml")).warnings == ()


def test_the_shipped_github_example_shows_two_long_repos_apart() -> None:
    path = EXAMPLES / "github.toml"
    pol = compile_policy(parse_config(path.read_bytes(), str(path)))
    delete = pol.actions["github.delete_repo"]
    texts = set()
    for repo in ("infrastructure-terraform-production", "infrastructure-terraform-playground"):
        params = {"owner": "acme-platform-engineering", "repo": repo}
        text = delete.binding_message(params, hashlib.sha256(b"same digest").hexdigest())
        assert text.endswith(repo[-10:] + " #" + hashlib.sha256(b"same digest").hexdigest()[:6])
        texts.add(text)
    assert len(texts) == 2
    assert any("github.delete_repo.binding_message" in w for w in pol.warnings)


def test_policy_check_prints_warnings_and_still_succeeds() -> None:
    done = run_ctl(None, "policy", "check", str(EXAMPLES / "github.toml"))
    assert done.returncode == 0, done.stderr
    assert "3 warning(s)" in done.stdout
    # the policy's own warnings name the file; those about this machine's interpreter do not
    path = EXAMPLES / "github.toml"
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(f"warning: {path}: ")]
    assert len(lines) == 3
    assert any("github.delete_repo.binding_message" in ln and "{repo}" in ln for ln in lines)


def test_the_daemon_logs_the_warnings_when_it_loads_the_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = EXAMPLES / "github.toml"
    with caplog.at_level("WARNING", logger="aegisd.daemon.daemon"):
        Daemon(parse_config(path.read_bytes(), str(path)))
    logged = [r.getMessage() for r in caplog.records if r.name == "aegisd.daemon.daemon"]
    assert sum(m.startswith("policy: ") for m in logged) == 3
    assert any("github.delete_repo.binding_message" in m for m in logged)

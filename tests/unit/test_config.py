"""Config loading: every mistake is reported with the file, the key and what was expected.

The same errors through ``aegisd --config`` (exit 78) and ``aegisctl policy check`` are in
``tests/test_cli_core.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aegisd.config import (
    Config,
    default_audit_path,
    default_config_path,
    default_socket_path,
    load_config,
    parse_config,
    resolve_config_path,
)
from aegisd.errors import ConfigError

SRC = "/etc/aegis/aegisd.toml"

DESIGN_EXAMPLE = """
[daemon]
socket = "/run/user/1000/aegis/aegisd.sock"
audit_log = "/var/lib/aegis/audit.jsonl"
max_connections = 256

[auth0]
domain = "example.eu.auth0.com"
client_id = "abc"
client_auth = "client_secret_post"
user_id = "auth0|123"
audience = "https://aegis/api"
requested_expiry = 120

[auth0.management]
client_id = "def"

[secrets]
backend = "keyring"

[[callers]]
name = "claude-github"
exe = ["/usr/bin/python3.12"]
argv = ["*aegis-mcp*"]
actions = ["github.*"]

[actions."github.delete_repo"]
description = "Delete a GitHub repository"
approval = "ciba"
binding_message = "Delete repo {owner}/{repo}"
params = { owner = "^[A-Za-z0-9-]{1,39}$", repo = "^[A-Za-z0-9._-]{1,100}$" }
credential = { kind = "token_vault", connection = "github" }
delivery = "proxy"
request = { method = "DELETE", url = "https://api.github.com/repos/{owner}/{repo}" }
remember = { scope = "request", ttl = 0 }
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    assert info.value.exit_code == 78
    return info.value.problems


def test_design_example_parses() -> None:
    cfg = parse_config(DESIGN_EXAMPLE, SRC)
    assert cfg.source == SRC
    assert cfg.socket_path() == Path("/run/user/1000/aegis/aegisd.sock")
    assert cfg.audit_path() == Path("/var/lib/aegis/audit.jsonl")
    assert cfg.auth0 is not None and cfg.auth0.management is not None
    assert cfg.callers[0].name == "claude-github"
    action = cfg.actions["github.delete_repo"]
    assert action.credential.kind == "token_vault"
    assert action.request is not None and action.request.method == "DELETE"


def test_empty_file_gives_safe_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # platformdirs warns when it is unset
    tmp_path.chmod(0o700)
    cfg = parse_config("", SRC)
    assert cfg.callers == [] and cfg.actions == {}  # default deny: nobody may ask for anything
    assert cfg.daemon.max_connections == 256
    assert cfg.daemon.allowed_uids == []
    assert cfg.secrets.backend == "keyring"
    assert cfg.socket_path() == default_socket_path()
    assert cfg.audit_path() == default_audit_path()


def test_default_paths_follow_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    tmp_path.chmod(0o700)
    assert default_config_path() == tmp_path / "cfg" / "aegis" / "aegisd.toml"
    assert default_audit_path() == tmp_path / "state" / "aegis" / "audit.jsonl"
    assert default_socket_path() == tmp_path / "aegis" / "aegisd.sock"


def test_tilde_in_paths_is_expanded() -> None:
    cfg = parse_config('[daemon]\nsocket = "~/a.sock"\naudit_log = "~/a.jsonl"\n', SRC)
    assert not str(cfg.socket_path()).startswith("~")
    assert not str(cfg.audit_path()).startswith("~")


def test_unknown_key_names_file_section_and_key() -> None:
    (problem,) = problems_of("[daemon]\nmax_conections = 5\n")
    assert problem.startswith(f"{SRC}:2: key daemon.max_conections: unknown key")
    assert "did you mean max_connections?" in problem


def test_unknown_top_level_section_is_an_error() -> None:
    (problem,) = problems_of("[deamon]\nsocket = '/x'\n")
    assert SRC in problem and "deamon" in problem


def test_wrong_type_names_file_key_and_expected_type() -> None:
    (problem,) = problems_of('[daemon]\nmax_connections = "many"\n')
    assert problem == (
        f'{SRC}:2: key daemon.max_connections: expected an integer, got a string ("many")'
    )


def test_wrong_type_inside_an_action_names_the_action() -> None:
    (problem,) = problems_of('[actions."demo.read"]\napproval = "maybe"\n[actions.b]\n')
    assert problem.startswith(f"{SRC}:2: key actions.demo.read.approval:")


def test_wrong_type_in_a_nested_table_of_an_action_names_the_action() -> None:
    (problem,) = problems_of("[actions.a]\n[actions.b]\nrequest = { url = 1 }\n")
    assert problem == f"{SRC}:3: key actions.b.request.url: expected a string, got an integer (1)"


def test_wrong_type_in_a_caller_rule_names_its_index() -> None:
    (problem,) = problems_of('[[callers]]\nname = "a"\n[[callers]]\nname = "b"\nexe = "/bin/x"\n')
    assert problem.startswith(f"{SRC}:5: key callers[1].exe: expected an array of strings")


def test_bad_regex_names_action_and_parameter() -> None:
    (problem,) = problems_of('[actions.x]\nparams = { repo = "^[a-z" }\n')
    assert problem.startswith(f"{SRC}:2: key actions.x.params.repo: invalid regular expression")


def test_every_regex_problem_is_reported() -> None:
    found = problems_of(
        '[actions.x]\nparams = { a = "(", b = "[" }\n[actions.y]\nparams = { c = "*" }\n'
    )
    assert len(found) == 3
    assert {p.split(":")[2].strip() for p in found} == {
        "key actions.x.params.a",
        "key actions.x.params.b",
        "key actions.y.params.c",
    }


def test_not_toml_names_the_file() -> None:
    (problem,) = problems_of("[daemon\n")
    assert problem.startswith(f"{SRC}: not valid TOML")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[auth0]\nclient_id = "a"\nuser_id = "u"\n', "key auth0: set either domain or issuer"),
        (
            '[auth0]\ndomain = "d"\nclient_id = "a"\nuser_id = "u"\nrequested_expiry = 301\n',
            "key auth0.requested_expiry",
        ),
        ("[daemon]\nmax_connections = 0\n", "key daemon.max_connections"),
        ('[[callers]]\nname = "a"\nsha256 = ["ABC"]\n', "key callers[0].sha256"),
        ("[audit]\nrefusal_burst = 0\n", "key audit.refusal_burst"),
        ("[audit]\nkeep_files = -1\n", "key audit.keep_files"),
    ],
)
def test_semantic_problems_name_the_key(text: str, key: str) -> None:
    (problem,) = problems_of(text)
    assert problem.startswith(f"{SRC}:") and f": {key}" in problem


def test_audit_section_keys_parse() -> None:
    cfg = parse_config(
        "[audit]\nrefusals_per_second = 0\nrefusal_burst = 3\nsummary_interval = 1.5\n"
        "keep_files = 4\ngrowth_warning_bytes_per_hour = 0\n",
        SRC,
    )
    assert (cfg.audit.refusals_per_second, cfg.audit.refusal_burst) == (0, 3)
    assert (cfg.audit.summary_interval, cfg.audit.keep_files) == (1.5, 4)
    assert parse_config("", SRC).audit.keep_files == 0  # by default nothing is ever deleted
    (problem,) = problems_of("[audit]\nkeep_file = 1\n")
    assert "key audit.keep_file: unknown key; did you mean keep_files?" in problem


def test_missing_required_key_is_named() -> None:
    (problem,) = problems_of('[auth0]\ndomain = "d"\nuser_id = "u"\n')
    assert SRC in problem and "client_id" in problem


def test_error_message_lists_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[actions.x]\nparams = { a = "(", b = "[" }\n', SRC)
    assert str(info.value) == "; ".join(info.value.problems)


# ---- finding and reading the file -----------------------------------------------------------


def test_resolve_prefers_explicit_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AEGIS_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_config_path(tmp_path / "x.toml") == tmp_path / "x.toml"
    assert resolve_config_path(None) == tmp_path / "env.toml"
    monkeypatch.delenv("AEGIS_CONFIG")
    assert resolve_config_path(None) == default_config_path()


def test_load_reads_the_file_and_records_its_path(tmp_path: Path) -> None:
    path = tmp_path / "aegisd.toml"
    path.write_text("[daemon]\nmax_connections = 3\n")
    cfg = load_config(path)
    assert cfg.daemon.max_connections == 3
    assert cfg.source == str(path)


def test_load_uses_aegis_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "aegisd.toml"
    path.write_text("[daemon]\nmax_connections = 4\n")
    monkeypatch.setenv("AEGIS_CONFIG", str(path))
    assert load_config().daemon.max_connections == 4


def test_missing_explicit_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_missing_default_file_gives_an_empty_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AEGIS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.actions == {} and cfg.callers == []


def test_load_reports_problems_with_the_real_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[daemon]\nmax_connections = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:2: key daemon.max_connections")

"""``aegisctl secrets`` against a real Secret Service (gnome-keyring), and its refusals.

Each test drives the CLI in a subprocess (see conftest) so the keyring's process-wide state
never leaks into the test process. Values are unusual strings so that a leak into any output
or file is found by a plain substring search.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from aegisctl.main import cli
from click.testing import CliRunner

from aegisd.errors import SecretsUnavailable

from .keyring_session import KeyringSession

VALUE = "zq-7Kc0ffee-Secret-9Xv"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIBVwIBADANBgkqhkiG9w0BAQEFAASCAUEwggE9AgEAAkEAzq7Kc0ffeeXv\n"
    "-----END PRIVATE KEY-----\n"
)


def _all_output(result: dict[str, object]) -> str:
    return "".join(str(result.get(k) or "") for k in ("stdout", "stderr", "error", "transcript"))


def test_set_status_delete_round_trip_in_gnome_keyring(secret_service: KeyringSession) -> None:
    secret_service.config.write_text(
        textwrap.dedent(
            """
            [auth0]
            domain = "example.eu.auth0.com"
            client_id = "abc"
            user_id = "auth0|1"
            """
        )
    )
    r = secret_service.run(
        [
            {"cli": ["secrets", "status", "--json"]},
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": VALUE + "\n"},
            {"keyring_get": ["aegisd", "auth0_client_secret"]},
            {"cli": ["secrets", "status", "--json"]},
            {"cli": ["secrets", "status"]},
            {"scan": [str(secret_service.home), VALUE]},
            {"cli": ["secrets", "set", "auth0_private_key"], "input": PEM},
            {"keyring_get": ["aegisd", "auth0_private_key"]},
            {"cli": ["secrets", "delete", "auth0_client_secret"]},
            {"cli": ["secrets", "delete", "auth0_client_secret"]},
            {"keyring_get": ["aegisd", "auth0_client_secret"]},
        ]
    )
    before, set_, stored, after, text, scan, set_pem, stored_pem, deleted, again, gone = r

    doc = json.loads(before["stdout"])
    assert doc["backend"] == "keyring"
    assert doc["detail"] == "keyring.backends.SecretService.Keyring"
    assert doc["service"] == "aegisd"
    no_credential = {"systemd_credential": False}
    assert doc["secrets"]["auth0_client_secret"] == {
        "present": False,
        "needed": True,
        **no_credential,
    }
    assert doc["secrets"]["management_client_secret"] == {
        "present": False,
        "needed": False,
        **no_credential,
    }

    assert set_["exit"] == 0, set_
    assert stored["value"] == VALUE  # the trailing newline of the pipe is not part of it
    assert json.loads(after["stdout"])["secrets"]["auth0_client_secret"]["present"] is True
    lines = dict(line.split() for line in text["stdout"].splitlines()[1:])
    assert lines == {
        "auth0_client_secret": "present",
        "management_client_secret": "missing",
        "auth0_private_key": "missing",
        "token_vault_client_secret": "missing",
    }
    for step in (set_, after, text):
        assert VALUE not in _all_output(step)
    # gnome-keyring encrypts login.keyring: the value is nowhere on disk in clear.
    assert scan["hits"] == []

    assert set_pem["exit"] == 0, set_pem
    assert stored_pem["value"] == PEM.rstrip("\n")

    assert deleted["exit"] == 0
    assert "deleted auth0_client_secret" in deleted["stdout"]
    assert again["exit"] == 0
    assert "was not set" in again["stdout"]
    assert gone["value"] is None


def test_set_refuses_empty_argv_and_unknown_names(secret_service: KeyringSession) -> None:
    r = secret_service.run(
        [
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": ""},
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": " \n"},
            {"cli": ["secrets", "set", "auth0_client_secret", VALUE]},
            {"cli": ["secrets", "set", "auth0_client_secret", f"--value={VALUE}"]},
            {"cli": ["secrets", "set", VALUE], "input": "x\n"},
            {"cli": ["secrets", "set", "auth0_private_key"], "input": "/home/me/key.pem\n"},
            {"keyring_get": ["aegisd", "auth0_client_secret"]},
            {"keyring_get": ["aegisd", "auth0_private_key"]},
        ]
    )
    empty, blank, argv, option, unknown, not_pem, kept, kept_pem = r
    assert empty["exit"] == 2 and "empty value" in empty["stderr"]
    assert blank["exit"] == 2 and "empty value" in blank["stderr"]
    for step in (argv, option):
        assert step["exit"] == 2
        assert "never taken from the command line" in step["stderr"]
    assert unknown["exit"] == 2 and "must be one of" in unknown["stderr"]
    for step in (argv, option, unknown):
        assert VALUE not in _all_output(step)
    assert not_pem["exit"] == SecretsUnavailable.exit_code
    assert "expected a PEM private key" in not_pem["error"]
    assert "/home/me/key.pem" not in _all_output(not_pem)
    assert kept["value"] is None
    assert kept_pem["value"] is None


def test_prompt_on_a_terminal_hides_input_and_confirms(secret_service: KeyringSession) -> None:
    prompt = "Value for auth0_client_secret: "
    repeat = "Repeat for confirmation: "
    r = secret_service.run(
        [
            {
                "pty": ["secrets", "set", "auth0_client_secret"],
                "answers": [
                    [prompt, VALUE],
                    [repeat, VALUE + "-typo"],
                    [prompt, VALUE],
                    [repeat, VALUE],
                ],
            },
            {"keyring_get": ["aegisd", "auth0_client_secret"]},
        ]
    )
    tty, stored = r
    assert tty["unanswered"] == [], tty["transcript"]
    assert tty["exit"] == 0, tty["transcript"]
    assert "do not match" in tty["transcript"]
    assert VALUE not in tty["transcript"]  # nothing typed was echoed
    assert stored["value"] == VALUE


def test_locked_keyring_fails_fast_with_a_hint(secret_service: KeyringSession) -> None:
    # gnome-keyring started but never unlocked, and no prompter can run: every call is
    # refused by the daemon ("Prompt dismissed"), which must surface as a typed error.
    r = secret_service.run(
        [
            {"cli": ["secrets", "status"]},
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": VALUE},
        ],
        unlock=False,
    )
    for step in r:
        assert step["exit"] == SecretsUnavailable.exit_code, step
        assert "could not be opened" in step["error"]
        assert "gnome-keyring-daemon" in step["error"]  # the hint
        assert step["elapsed"] < 10
        assert VALUE not in _all_output(step)


def test_no_session_bus_is_refused_not_a_plaintext_fallback(no_bus: KeyringSession) -> None:
    forced = {"PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring"}
    auto = no_bus.run([{"cli": ["secrets", "set", "auth0_client_secret"], "input": VALUE}])[0]
    secret_service = no_bus.run([{"cli": ["secrets", "status"]}], env=forced)[0]

    # keyring found nothing and chose its fail backend: refused, with the way out.
    assert auto["exit"] == SecretsUnavailable.exit_code
    assert "refusing keyring backend keyring.backends.fail.Keyring" in auto["error"]
    assert 'backend = "env"' in auto["error"]
    assert secret_service["exit"] == SecretsUnavailable.exit_code
    assert "DBUS_SESSION_BUS_ADDRESS" in secret_service["error"]
    assert list(no_bus.home.rglob("*.cfg")) == []


def test_plaintext_backend_is_refused_end_to_end(no_bus: KeyringSession) -> None:
    # A stand-in with the real module path and class name of keyrings.alt's plaintext backend
    # (not installed here), selected the way a person would: PYTHON_KEYRING_BACKEND.
    site = no_bus.root / "site"
    (site / "keyrings" / "alt").mkdir(parents=True)
    (site / "keyrings" / "alt" / "__init__.py").write_text("")
    store = no_bus.home / "keyring_pass.cfg"
    (site / "keyrings" / "alt" / "file.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from keyring.backend import KeyringBackend

            class PlaintextKeyring(KeyringBackend):
                priority = 0.5
                def get_password(self, service, username):
                    return None
                def set_password(self, service, username, password):
                    Path({str(store)!r}).write_text(password)
                def delete_password(self, service, username):
                    pass
            """
        )
    )
    env = {
        "PYTHONPATH": str(site),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
    }
    set_, status = no_bus.run(
        [
            {"cli": ["secrets", "set", "auth0_client_secret"], "input": VALUE},
            {"cli": ["secrets", "status"]},
        ],
        env=env,
    )
    for step in (set_, status):
        assert step["exit"] == SecretsUnavailable.exit_code
        assert "refusing keyring backend keyrings.alt.file.PlaintextKeyring" in step["error"]
        assert "plaintext" in step["error"] or "in a file" in step["error"]
    assert not store.exists()


def _env_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "aegisd.toml"
    cfg.write_text('[secrets]\nbackend = "env"\n')
    return cfg


def test_env_backend_is_read_only_and_reported(tmp_path: Path) -> None:
    # backend "env" never loads keyring, so this runs in-process.
    cfg = _env_config(tmp_path)
    runner = CliRunner()
    env = {"AEGIS_SECRET_AUTH0_CLIENT_SECRET": VALUE}

    status = runner.invoke(cli, ["--config", str(cfg), "secrets", "status", "--json"], env=env)
    set_ = runner.invoke(
        cli, ["--config", str(cfg), "secrets", "set", "auth0_client_secret"], input=VALUE
    )

    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    assert doc["backend"] == "env"
    assert doc["secrets"]["auth0_client_secret"]["present"] is True
    assert doc["secrets"]["auth0_private_key"]["present"] is False
    assert VALUE not in status.output
    assert isinstance(set_.exception, SecretsUnavailable)
    assert "AEGIS_SECRET_AUTH0_CLIENT_SECRET" in set_.exception.message

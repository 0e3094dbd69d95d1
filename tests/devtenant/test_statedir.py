"""The state dir: ready-made daemon config, secrets file, persisted key/clients/users, modes."""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from pathlib import Path

import httpx
import trio
from hypothesis import given
from hypothesis import strategies as st

from aegisd.config import parse_config
from aegisd.devtenant import open_dev_tenant
from aegisd.devtenant.stateconfig import TenantFacts, render_aegisd_toml
from aegisd.devtenant.toml_text import toml_key, toml_string

from .helpers import approved_tokens, fast, vault


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line)
    return {k: v for k, v in pairs}


async def test_state_dir_holds_a_config_aegisd_accepts_and_private_secrets(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with trio.fail_after(10):
        async with open_dev_tenant(fast(state_dir=state)) as t:
            pass
    cfg = parse_config((state / "aegisd.toml").read_bytes(), "aegisd.toml")
    assert cfg.auth0 is not None and cfg.auth0.management is not None
    assert cfg.auth0.issuer == t.issuer and cfg.auth0.allow_insecure_http
    assert cfg.auth0.client_id == t.client_id and cfg.auth0.user_id == t.user_id
    assert cfg.auth0.audience == "https://aegis.dev/api"
    assert cfg.auth0.management.client_id == t.mgmt_client_id
    assert cfg.secrets.backend == "env"
    assert cfg.socket_path() == state / "run" / "aegisd.sock"
    assert cfg.audit_path() == state / "audit.jsonl"
    # aegisctl first, as the operator (issue 13 finding 5); then every script of this Python
    operator, local = cfg.callers
    assert (operator.name, operator.operator, operator.argv) == ("operator", True, ["*/aegisctl *"])
    assert local.exe == operator.exe == [os.path.realpath(sys.executable)]
    assert (local.actions, local.operator) == (["demo.*"], False)
    read, delete, token = (cfg.actions[n] for n in ("demo.read", "demo.delete", "demo.token"))
    assert (read.approval, read.credential.kind, read.delivery) == ("none", "none", "proxy")
    assert read.request is not None and read.request.url == t.issuer + "demo-api/repos"
    assert (delete.approval, delete.credential.kind) == ("ciba", "token_vault")
    assert delete.credential.connection == "github" and delete.params == {
        "repo": "^[A-Za-z0-9._-]{1,100}$"
    }
    assert delete.request is not None and delete.request.method == "DELETE"
    assert delete.request.url == t.issuer + "demo-api/repos/{repo}"
    assert (token.approval, token.credential.kind) == ("ciba", "ciba_token")
    assert token.delivery == "token"
    assert _env(state / "secrets.env") == {
        "AEGIS_SECRET_AUTH0_CLIENT_SECRET": t.client_secret,
        "AEGIS_SECRET_MANAGEMENT_CLIENT_SECRET": t.mgmt_client_secret,
        "AEGIS_SECRET_TOKEN_VAULT_CLIENT_SECRET": t.api_client_secret,
    }
    # the documented Token Vault path: the Custom API Client linked to the audience
    assert cfg.auth0.token_vault is not None
    assert cfg.auth0.token_vault.client_id == t.api_client_id
    for name in ("secrets.env", "aegisd.toml", "signing-key.pem", "users.toml", "clients.toml"):
        assert _mode(state / name) == 0o600, name
    assert _mode(state) == 0o700


async def test_a_restart_keeps_key_clients_users_and_provider_tokens(tmp_path: Path) -> None:
    opts = fast(state_dir=tmp_path)
    with trio.fail_after(15):
        async with open_dev_tenant(opts) as t1, httpx.AsyncClient(base_url=t1.issuer) as c:
            kid1 = (await c.get(".well-known/jwks.json")).json()["keys"][0]["kid"]
            at1 = (await approved_tokens(c, t1, audience=t1.audience))["access_token"]
            gh1 = (await vault(c, t1, at1)).json()
        async with open_dev_tenant(opts) as t2, httpx.AsyncClient(base_url=t2.issuer) as c:
            kid2 = (await c.get(".well-known/jwks.json")).json()["keys"][0]["kid"]
            at2 = (await approved_tokens(c, t2, audience=t2.audience))["access_token"]
            gh2 = (await vault(c, t2, at2)).json()
    assert kid1 == kid2
    assert (t1.client_id, t1.client_secret) == (t2.client_id, t2.client_secret)
    assert (t1.api_client_id, t1.api_client_secret) == (t2.api_client_id, t2.api_client_secret)
    assert gh1["access_token"] == gh2["access_token"]
    users = tomllib.loads((tmp_path / "users.toml").read_text())["users"]
    assert users[0]["user_id"] == "auth0|aegis-demo" and users[0]["email"]
    github = next(a for a in users[0]["accounts"] if a["connection"] == "github")
    assert github["access_token"] == gh1["access_token"]
    assert github["provider_user_id"] == 5550123


async def test_a_state_dir_from_before_the_custom_api_client_gains_one(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_dev_tenant(fast(state_dir=tmp_path)) as t1:
            pass
        path = tmp_path / "clients.toml"
        old = path.read_text().split("[[clients]]")
        path.write_text("[[clients]]".join(b for b in old if "resource_server" not in b))
        async with open_dev_tenant(fast(state_dir=tmp_path)) as t2:
            pass
        async with open_dev_tenant(fast(state_dir=tmp_path)) as t3:
            pass
    assert t2.client_id == t1.client_id and t2.api_client_id != t1.api_client_id
    assert t3.api_client_id == t2.api_client_id  # written back, so it survives restarts
    assert _mode(path) == 0o600


async def test_rotation_is_persisted(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_dev_tenant(fast(state_dir=tmp_path)) as t1:
            kid = t1.rotate_keys()
        async with (
            open_dev_tenant(fast(state_dir=tmp_path)) as t2,
            httpx.AsyncClient(base_url=t2.issuer) as c,
        ):
            kids = [k["kid"] for k in (await c.get(".well-known/jwks.json")).json()["keys"]]
    assert kids == [kid]


async def test_write_state_on_an_in_memory_tenant(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_dev_tenant(fast()) as t:
            config_path, secrets_path = t.write_state(tmp_path / "later")
    assert sorted(p.name for p in (tmp_path / "later").iterdir()) == ["aegisd.toml", "secrets.env"]
    assert parse_config(config_path.read_text()).auth0 is not None
    assert _mode(secrets_path) == 0o600


_FACTS = TenantFacts(
    issuer="http://127.0.0.1:8765/",
    client_id='id"with\\odd',
    client_secret="s",
    mgmt_client_id="m",
    mgmt_client_secret="ms",
    api_client_id="api-id",
    api_client_secret="api-secret",
    user_id="auth0|a\tb",
    audience="https://aegis.dev/api",
)


def test_awkward_paths_and_values_stay_valid_toml(tmp_path: Path) -> None:
    odd = tmp_path / 'dir with "quotes" \\ and ü'
    cfg = parse_config(render_aegisd_toml(_FACTS, odd, caller_exe='/opt/py "3"/python'))
    assert cfg.auth0 is not None
    assert cfg.auth0.client_id == 'id"with\\odd' and cfg.auth0.user_id == "auth0|a\tb"
    assert cfg.socket_path() == odd / "run" / "aegisd.sock"
    assert cfg.callers[0].exe == ['/opt/py "3"/python']


@given(st.text())
def test_toml_strings_round_trip(text: str) -> None:
    doc = f"{toml_key(text)} = {toml_string(text)}\n"
    parsed = tomllib.loads(doc)
    assert list(parsed.values()) == [text]
    assert list(parsed) == [text]

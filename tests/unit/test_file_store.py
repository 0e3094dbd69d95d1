"""The ``file`` secret store: what it accepts, what it refuses and how it writes for the daemon."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aegisd.config import SecretsConfig, parse_config
from aegisd.errors import SecretsUnavailable
from aegisd.file_store import FileSecretStore
from aegisd.secrets import open_secret_store

VALUE = "s3cret-value-for-tests"
NOBODY = 65534

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")


def store_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    return d


def write_secret(directory: Path, name: str, value: str = VALUE, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_text(value)
    os.chmod(path, mode)
    return path


async def test_set_then_get_round_trips_and_writes_0600(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path / "new" / "secrets")
    await store.set("auth0_client_secret", VALUE)

    assert await store.get("auth0_client_secret") == VALUE
    assert await store.present("auth0_client_secret")
    assert not await store.present("management_client_secret")
    st = os.stat(tmp_path / "new" / "secrets" / "auth0_client_secret")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "secrets").st_mode) == 0o700
    assert [p.name for p in (tmp_path / "new" / "secrets").iterdir()] == ["auth0_client_secret"]
    assert await store.delete("auth0_client_secret")
    assert not await store.delete("auth0_client_secret")


async def test_missing_secret_names_the_command_that_stores_it(tmp_path: Path) -> None:
    store = FileSecretStore(store_dir(tmp_path), set_hint="sudo aegisctl secrets set --system")
    with pytest.raises(SecretsUnavailable, match="sudo aegisctl secrets set --system auth0_"):
        await store.get("auth0_client_secret")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
async def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    d = store_dir(tmp_path)
    write_secret(d, "auth0_client_secret", mode=mode)
    store = FileSecretStore(d)
    with pytest.raises(SecretsUnavailable, match="chmod 600") as info:
        await store.get("auth0_client_secret")
    assert VALUE not in str(info.value)
    with pytest.raises(SecretsUnavailable):
        store.check()


@pytest.mark.parametrize("mode", [0o750, 0o755, 0o711, 0o500])
async def test_a_directory_not_0700_is_refused(tmp_path: Path, mode: int) -> None:
    d = store_dir(tmp_path)
    write_secret(d, "auth0_client_secret")
    os.chmod(d, mode)
    try:
        with pytest.raises(SecretsUnavailable, match="chmod 700"):
            await FileSecretStore(d).get("auth0_client_secret")
        with pytest.raises(SecretsUnavailable, match="chmod 700"):
            FileSecretStore(d).check()
    finally:
        os.chmod(d, 0o700)


async def test_symlinks_are_refused_for_the_file_and_the_directory(tmp_path: Path) -> None:
    d = store_dir(tmp_path)
    target = write_secret(tmp_path, "elsewhere")
    (d / "auth0_client_secret").symlink_to(target)
    with pytest.raises(SecretsUnavailable, match="symlink"):
        await FileSecretStore(d).get("auth0_client_secret")
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(SecretsUnavailable, match="symlink"):
        await FileSecretStore(link).present("management_client_secret")


async def test_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    d = store_dir(tmp_path)
    os.mkfifo(d / "auth0_client_secret", 0o600)
    with pytest.raises(SecretsUnavailable, match="not a regular file"):
        await FileSecretStore(d).get("auth0_client_secret")


@as_root
async def test_another_owner_is_refused_with_the_chown_fix(tmp_path: Path) -> None:
    d = store_dir(tmp_path)
    path = write_secret(d, "auth0_client_secret")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(SecretsUnavailable, match=r"owned by .*sudo chown root: "):
        await FileSecretStore(d).get("auth0_client_secret")
    # and a directory owned by someone else than the store's owner
    with pytest.raises(SecretsUnavailable, match="refusing the secrets directory"):
        await FileSecretStore(d, owner_uid=NOBODY).get("auth0_client_secret")


@as_root
async def test_root_writes_for_the_daemon_account_with_its_owner(tmp_path: Path) -> None:
    d = tmp_path / "state" / "secrets"
    store = FileSecretStore(d, owner_uid=NOBODY)
    await store.set("auth0_client_secret", VALUE)
    await store.set("auth0_client_secret", VALUE + "2")  # replaced atomically

    for path in (d, d / "auth0_client_secret"):
        st = os.lstat(path)
        assert st.st_uid == NOBODY
    assert stat.S_IMODE(os.stat(d / "auth0_client_secret").st_mode) == 0o600
    assert await store.get("auth0_client_secret") == VALUE + "2"
    assert sorted(p.name for p in d.iterdir()) == ["auth0_client_secret"]
    # the daemon account (not root) is the only owner accepted
    with pytest.raises(SecretsUnavailable):
        await FileSecretStore(d).get("auth0_client_secret")


async def test_systemd_credentials_win_over_the_directory(tmp_path: Path) -> None:
    d = store_dir(tmp_path)
    write_secret(d, "auth0_client_secret", "from-the-directory")
    write_secret(d, "management_client_secret", "only-in-the-directory")
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o500)
    write_secret(creds, "auth0_client_secret", "from-systemd", mode=0o400)
    cfg = SecretsConfig(backend="file", dir=str(d))
    store = FileSecretStore.from_config(cfg, {"CREDENTIALS_DIRECTORY": str(creds)})

    assert await store.get("auth0_client_secret") == "from-systemd"
    assert await store.get("management_client_secret") == "only-in-the-directory"
    os.chmod(creds / "auth0_client_secret", 0o444)
    with pytest.raises(SecretsUnavailable, match="lets others read it"):
        await store.get("auth0_client_secret")


def test_config_selects_the_file_backend_and_needs_an_absolute_dir() -> None:
    cfg = parse_config('[secrets]\nbackend = "file"\ndir = "/var/lib/aegis/secrets"\n')
    store = open_secret_store(cfg.secrets)
    assert isinstance(store, FileSecretStore)
    assert store.directory == Path("/var/lib/aegis/secrets")
    with pytest.raises(SecretsUnavailable, match="absolute"):
        open_secret_store(SecretsConfig(backend="file", dir="rel/secrets"))


def test_secret_modules_do_not_import_each_other_in_a_cycle() -> None:
    import ast
    import importlib.util

    def imports(module: str) -> set[str]:
        spec = importlib.util.find_spec(module)
        assert spec and spec.origin
        tree = ast.parse(Path(spec.origin).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "aegisd.secrets" not in imports("aegisd.keyring_store")
    assert "aegisd.secrets" not in imports("aegisd.file_store")


def test_the_daemon_refuses_to_start_on_an_unsafe_store() -> None:
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aeg-fs-", dir="/tmp") as short:
        root = Path(short)
        secrets_dir = root / "secrets"
        secrets_dir.mkdir()
        write_secret(secrets_dir, "auth0_client_secret")
        os.chmod(secrets_dir, 0o755)
        config = root / "aegisd.toml"
        config.write_text(
            f'[daemon]\nsocket = "{root}/run/aegisd.sock"\naudit_log = "{root}/audit.jsonl"\n'
            f'[secrets]\nbackend = "file"\ndir = "{secrets_dir}"\n'
        )
        aegisd = Path(sys.executable).parent / "aegisd"
        proc = subprocess.run(
            [str(aegisd), "--config", str(config)], capture_output=True, text=True, timeout=30
        )
    assert proc.returncode == 79, proc.stderr
    assert "refusing the secrets directory" in proc.stderr and "chmod 700" in proc.stderr
    assert VALUE not in proc.stderr

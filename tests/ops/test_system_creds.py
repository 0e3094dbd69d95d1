"""``secrets set --system --systemd-creds``: encrypted with the host key, loaded by a drop-in."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from aegisctl.system_creds import DROPIN, CredentialStore

from aegisd.errors import SecretsUnavailable

VALUE = "s3cret-for-systemd-creds"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-creds") is None or os.geteuid() != 0,
    reason="needs root and systemd-creds (systemd >= 250) to use the host credential key",
)


def test_encrypted_credential_round_trips_and_the_dropin_loads_it(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials", tmp_path / "aegisd.service.d")
    store.set("auth0_client_secret", VALUE)

    path = store.path("auth0_client_secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert VALUE.encode() not in path.read_bytes()
    plain = subprocess.run(
        ["systemd-creds", "decrypt", "--name=auth0_client_secret", str(path), "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert plain == VALUE.encode()
    # the name is bound into the ciphertext: it does not decrypt as another secret
    other = subprocess.run(
        ["systemd-creds", "decrypt", "--name=management_client_secret", str(path), "-"],
        capture_output=True,
    )
    assert other.returncode != 0
    dropin = (tmp_path / "aegisd.service.d" / DROPIN).read_text()
    assert f"LoadCredentialEncrypted=auth0_client_secret:{path}" in dropin.splitlines()
    assert store.names() == ["auth0_client_secret"]

    assert store.delete("auth0_client_secret")
    assert not path.exists() and not (tmp_path / "aegisd.service.d" / DROPIN).exists()
    assert not store.delete("auth0_client_secret")


def test_a_bad_value_is_refused_before_systemd_creds_runs(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials", tmp_path / "dropin")
    with pytest.raises(SecretsUnavailable, match="empty"):
        store.set("auth0_client_secret", " ")
    with pytest.raises(SecretsUnavailable, match="unknown secret name"):
        store.set("other", VALUE)
    assert not (tmp_path / "credentials").exists()

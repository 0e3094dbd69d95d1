"""KeyringSecretStore with injected backend objects: refusals, errors, time limits.

The fakes are taken out of keyring's process-wide backend registry as soon as they are
defined, so no other test that asks keyring for its default backend can ever be given one.
"""

# keyring's own backends have untyped constructors.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeVar

import pytest
import trio
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null
from keyring.errors import InitError, KeyringLocked, PasswordDeleteError

from aegisd.errors import SecretsUnavailable
from aegisd.keyring_store import KeyringSecretStore, refusal_reason
from aegisd.secrets import SECRET_NAMES, env_backend_warning

VALUE = "zq-7Kc0ffee-Secret-9Xv"


C = TypeVar("C", bound=type)


def _unregistered(cls: C) -> C:
    KeyringBackend._classes.discard(cls)
    return cls


@_unregistered
class DictKeyring(KeyringBackend):
    """An acceptable backend that keeps values in a dict and records every call."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}
        self.calls: list[str] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.calls.append(f"get {service} {username}")
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.calls.append(f"set {service} {username}")
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.calls.append(f"delete {service} {username}")
        if self.values.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


def _lookalike(module: str, name: str) -> type[DictKeyring]:
    """A DictKeyring subclass that claims to be ``module.name`` (e.g. keyrings.alt's)."""
    cls: type[DictKeyring] = type(name, (DictKeyring,), {"__module__": module})
    return _unregistered(cls)


PlaintextAlt = _lookalike("keyrings.alt.file", "PlaintextKeyring")
EncryptedAlt = _lookalike("keyrings.alt.file", "EncryptedKeyring")
PlaintextCryptfile = _lookalike("keyrings.cryptfile.file", "PlaintextKeyring")
CryptFile = _lookalike("keyrings.cryptfile.cryptfile", "CryptFileKeyring")


def _chain(*members: KeyringBackend) -> chainer.ChainerBackend:
    cls = _unregistered(
        type(
            "ChainerBackend",
            (chainer.ChainerBackend,),
            {"backends": list(members), "__module__": "keyring.backends.chainer"},
        )
    )
    chain: chainer.ChainerBackend = cls()
    return chain


@pytest.mark.parametrize(
    ("backend", "why"),
    [
        (null.Keyring(), "disabled"),
        (fail.Keyring(), "no usable keyring"),
        (PlaintextAlt(), "in a file"),
        (EncryptedAlt(), "in a file"),
        (PlaintextCryptfile(), "plaintext"),
        (_lookalike("site_keyrings", "MyPlaintextKeyring")(), "plaintext"),
        (_lookalike("mine", "Sub")(), None),
        (_chain(null.Keyring(), PlaintextAlt()), "no acceptable backend"),
        (_chain(), "no acceptable backend"),
    ],
    ids=[
        "null",
        "fail",
        "alt-plain",
        "alt-encrypted",
        "cryptfile-plain",
        "named",
        "ok",
        "chain",
        "empty",
    ],
)
def test_refusal_reason(backend: KeyringBackend, why: str | None) -> None:
    reason = refusal_reason(backend)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason


def test_subclass_of_a_refused_backend_is_refused() -> None:
    sub = _unregistered(type("Custom", (PlaintextAlt,), {"__module__": "somewhere"}))
    assert refusal_reason(sub()) is not None


@pytest.mark.parametrize("backend", [null.Keyring(), fail.Keyring(), PlaintextAlt()])
async def test_refused_backend_refuses_every_operation(backend: KeyringBackend) -> None:
    store = KeyringSecretStore(backend=backend)
    for op in (
        store.describe(),
        store.get("auth0_client_secret"),
        store.present("auth0_client_secret"),
        store.set("auth0_client_secret", VALUE),
        store.delete("auth0_client_secret"),
    ):
        with pytest.raises(SecretsUnavailable) as info:
            await op
        assert "refusing keyring backend" in info.value.message
        assert 'backend = "env"' in info.value.message  # the way out for dev
        assert VALUE not in info.value.message


async def test_cryptfile_is_accepted() -> None:
    store = KeyringSecretStore(backend=CryptFile())
    await store.set("auth0_client_secret", VALUE)
    assert await store.get("auth0_client_secret") == VALUE


async def test_mixed_chain_uses_only_its_acceptable_member() -> None:
    plain, good = PlaintextAlt(), DictKeyring()
    plain.values[("aegisd", "auth0_client_secret")] = "planted-in-plaintext"
    store = KeyringSecretStore(backend=_chain(plain, good))

    assert (await store.describe()).endswith(".DictKeyring")
    assert await store.present("auth0_client_secret") is False  # the plaintext one is not read
    await store.set("auth0_client_secret", VALUE)
    assert good.values[("aegisd", "auth0_client_secret")] == VALUE
    assert plain.values[("aegisd", "auth0_client_secret")] == "planted-in-plaintext"
    assert plain.calls == []


async def test_round_trip_under_the_configured_service() -> None:
    backend = DictKeyring()
    store = KeyringSecretStore(service="aegisd-work", backend=backend)

    assert await store.present("management_client_secret") is False
    await store.set("management_client_secret", VALUE)
    assert await store.get("management_client_secret") == VALUE
    assert backend.values == {("aegisd-work", "management_client_secret"): VALUE}
    assert await store.delete("management_client_secret") is True
    assert await store.delete("management_client_secret") is False
    with pytest.raises(SecretsUnavailable, match="aegisctl secrets set management_client_secret"):
        await store.get("management_client_secret")


async def test_unknown_names_and_bad_values_never_reach_the_keyring() -> None:
    backend = DictKeyring()
    store = KeyringSecretStore(backend=backend)
    with pytest.raises(SecretsUnavailable, match="unknown secret name"):
        await store.get("github_token")
    with pytest.raises(SecretsUnavailable, match="unknown secret name"):
        await store.set("github_token", VALUE)
    with pytest.raises(SecretsUnavailable, match="empty"):
        await store.set("auth0_client_secret", "  ")
    with pytest.raises(SecretsUnavailable, match="PEM"):
        await store.set("auth0_private_key", "/home/me/key.pem")
    assert backend.calls == []


@_unregistered
class BrokenKeyring(DictKeyring):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def get_password(self, service: str, username: str) -> str | None:
        raise self.exc

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyringLocked("Failed to unlock the collection!"), "is locked"),
        (InitError("Failed to create the collection: Prompt dismissed.."), "could not be opened"),
        (EOFError(), "no terminal"),
        (RuntimeError(f"backend echoed {VALUE}"), "DBUS_SESSION_BUS_ADDRESS"),
    ],
    ids=["locked", "init", "getpass", "other"],
)
async def test_backend_failures_become_typed_errors_without_foreign_text(
    exc: Exception, expected: str
) -> None:
    store = KeyringSecretStore(backend=BrokenKeyring(exc))
    for op in (store.get("auth0_client_secret"), store.set("auth0_client_secret", VALUE)):
        with pytest.raises(SecretsUnavailable) as info:
            await op
        assert expected in info.value.message
        assert "gnome-keyring-daemon" in info.value.message  # the hint
        assert VALUE not in info.value.message
        assert VALUE not in str(info.value.__cause__) + str(info.value.__context__)


@_unregistered
class HangingKeyring(DictKeyring):
    """Blocks like a keyring waiting for an unlock prompt nobody answers."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = 0

    def get_password(self, service: str, username: str) -> str | None:
        self.entered += 1
        self.release.wait(30)
        return None


@pytest.fixture
def hanging() -> Iterator[HangingKeyring]:
    backend = HangingKeyring()
    yield backend
    backend.release.set()


async def test_a_hanging_keyring_times_out_with_a_hint(hanging: HangingKeyring) -> None:
    # Real (short) time: the worker thread must really start for the pile-up check to mean
    # anything, and a thread is not a trio task that autojump_clock could wait for.
    store = KeyringSecretStore(backend=hanging, timeout=0.1)
    start = trio.current_time()
    with trio.fail_after(5):
        for _ in range(3):
            with pytest.raises(SecretsUnavailable) as info:
                await store.get("auth0_client_secret")
            assert "did not answer within 0.1 s" in info.value.message
            assert "gnome-keyring-daemon" in info.value.message
    assert trio.current_time() - start < 2
    # One worker at a time: the later calls waited for the stuck thread instead of piling on.
    assert hanging.entered == 1


def test_env_backend_warning_is_loud_and_names_the_variables() -> None:
    text = env_backend_warning()
    assert "WARNING" in text and "ONLY" in text
    for name in SECRET_NAMES:
        assert "AEGIS_SECRET_" + name.upper() in text
    assert "aegisctl secrets set" in text

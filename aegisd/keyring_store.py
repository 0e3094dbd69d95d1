"""The ``keyring`` secret store: aegisd's secrets in the OS keyring, never in plaintext.

Owns ``KeyringSecretStore``: choosing the keyring backend (the one ``keyring`` itself would
pick, or one passed in), refusing backends that would store secrets in a file or not at all
(``refusal_reason``), running every blocking keyring call in a worker thread under a time
limit, and translating whatever the backend raises into ``SecretsUnavailable`` with a hint.

Must not: log or quote a secret value or a backend's exception text (foreign text may echo
what it was given); fall back to another backend when the chosen one fails; hold state
outside the store instance (``keyring``'s own process-wide default is only read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar, final

import trio

from aegisd.errors import SecretsUnavailable
from aegisd.secret_checks import check_secret_name, check_secret_value

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEYRING_HINT",
    "KeyringSecretStore",
    "backend_path",
    "refusal_reason",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Long enough for a Secret Service round trip on a loaded machine, short enough that a keyring
# waiting on an unlock prompt nobody will answer (a headless box) fails visibly.
DEFAULT_TIMEOUT: Final = 15.0

KEYRING_HINT: Final = (
    "On a desktop, log in so that your login keyring is unlocked. On a headless Linux box, "
    "run gnome-keyring-daemon in the user's D-Bus session and unlock it "
    '(docs/OPERATIONS.md, "Keyring on a headless machine"); on macOS, the login Keychain '
    "must be unlocked. For tests and the dev tenant only, set "
    '[secrets] backend = "env".'
)

# Backends that keep nothing (null), refuse everything (fail) or write a file that any process
# of the user can read (keyrings.alt.file; it also holds the weakly protected
# EncryptedKeyring). Matched by module and class name so we never import keyrings.alt.
_REFUSED_MODULES: Final[dict[str, str]] = {
    "keyring.backends.fail": "no usable keyring was found (keyring's fail backend)",
    "keyring.backends.null": "keyring is disabled (the null backend stores nothing)",
    "keyrings.alt.file": "keyrings.alt file backends keep secrets in a file under your home",
}


def backend_path(backend: object) -> str:
    """``module.Class`` of a backend object, as people write it in PYTHON_KEYRING_BACKEND."""
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def refusal_reason(backend: object) -> str | None:
    """Why aegisd refuses this keyring backend, or ``None`` when it is acceptable.

    Refused: ``keyring.backends.fail`` and ``keyring.backends.null``; anything defined in
    ``keyrings.alt.file``; any class named like ``PlaintextKeyring`` (keyrings.alt, the copy in
    keyrings.cryptfile, and their subclasses); a chainer none of whose members is acceptable.
    Subclasses are judged by every class in their MRO.
    """
    from keyring.backends.chainer import ChainerBackend

    if isinstance(backend, ChainerBackend):
        if _first_acceptable(backend) is None:
            members = ", ".join(backend_path(b) for b in _chain_members(backend)) or "none"
            return f"the keyring chain has no acceptable backend (members: {members})"
        return None
    for cls in type(backend).__mro__:
        module = cls.__module__
        for refused, why in _REFUSED_MODULES.items():
            if module == refused or module.startswith(refused + "."):
                return why
        if "plaintext" in cls.__name__.lower():
            return "it stores secrets in plaintext"
    return None


def _chain_members(chain: object) -> list[object]:
    members = getattr(chain, "backends", ())
    return list(members)


def _first_acceptable(chain: object) -> KeyringBackend | None:
    # The chainer lists its members by priority; using the best acceptable one directly means
    # a plaintext member further down the chain can never answer a read or take a write.
    for member in _chain_members(chain):
        if refusal_reason(member) is None:
            return member  # type: ignore[return-value]
    return None


def _refused(backend: object, why: str) -> SecretsUnavailable:
    return SecretsUnavailable(
        f"refusing keyring backend {backend_path(backend)}: {why}. Aegis never keeps its "
        "secrets in plaintext or in a disabled keyring. Use a real keyring (Secret Service "
        "such as GNOME Keyring or KWallet on Linux, the login Keychain on macOS; select it with "
        "PYTHON_KEYRING_BACKEND=keyring.backends.SecretService.Keyring if needed). " + KEYRING_HINT
    )


def _where(backend: object | None) -> str:
    return f"the keyring ({backend_path(backend)})" if backend is not None else "the keyring"


def _translate(exc: Exception, backend: object | None, doing: str) -> SecretsUnavailable:
    """Map a foreign exception to ``SecretsUnavailable`` without quoting its text."""
    from keyring.errors import InitError, KeyringLocked, NoKeyringError

    where = _where(backend)
    kind = type(exc).__name__
    if isinstance(exc, KeyringLocked):
        return SecretsUnavailable(f"{where} is locked ({doing}). {KEYRING_HINT}")
    if isinstance(exc, NoKeyringError):
        return SecretsUnavailable(f"no usable keyring backend ({doing}). {KEYRING_HINT}")
    if isinstance(exc, InitError):
        # gnome-keyring with no unlocked default collection and nobody to answer the prompt
        # raises "Failed to create the collection: Prompt dismissed".
        return SecretsUnavailable(
            f"{where} could not be opened ({doing}: {kind}; no unlocked default collection, "
            f"or an unlock prompt was dismissed). {KEYRING_HINT}"
        )
    if isinstance(exc, EOFError):
        # e.g. a file keyring asking for its password with getpass() and no terminal.
        return SecretsUnavailable(
            f"{where} asked for a password and no terminal could answer ({doing}). {KEYRING_HINT}"
        )
    # RuntimeError "Unable to initialize SecretService" (no session bus), jeepney and
    # secretstorage errors, OSError: all mean the keyring service cannot be reached.
    return SecretsUnavailable(
        f"{where} failed ({doing}: {kind}); is the keyring service running and reachable "
        f"(for Secret Service: a D-Bus session bus, DBUS_SESSION_BUS_ADDRESS)? {KEYRING_HINT}"
    )


@final
class KeyringSecretStore:
    """Secrets under one keyring service name (default ``aegisd``), user name = secret name.

    Args:
        service: the keyring service name (``[secrets] service``).
        backend: a keyring backend object to use instead of keyring's own choice (tests,
            embedders). It is checked like any other.
        timeout: seconds allowed for each keyring operation, waiting for the worker included.

    Every method raises ``SecretsUnavailable`` (with a hint) when the backend is refused,
    locked, absent, too slow, or fails; ``get`` also when the secret is not set.
    """

    backend_name = "keyring"

    def __init__(
        self,
        service: str = "aegisd",
        *,
        backend: KeyringBackend | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not service:
            raise SecretsUnavailable("the keyring service name must not be empty")
        self.service = service
        self.timeout = timeout
        self._given = backend
        self._backend: KeyringBackend | None = None
        # One worker at a time: a keyring that hangs then ties up one abandoned thread, not
        # one per request, and later calls time out waiting for it instead of piling up.
        self._limiter: trio.CapacityLimiter | None = None

    async def describe(self) -> str:
        """``module.Class`` of the backend in use (resolving it if needed)."""
        return backend_path(await self._resolve())

    async def get(self, name: str) -> str:
        check_secret_name(name)
        backend = await self._resolve()
        value = await self._call(
            lambda: backend.get_password(self.service, name), backend, f"reading {name}"
        )
        if value is None:
            raise SecretsUnavailable(
                f"secret {name!r} is not in the keyring (service {self.service!r}); "
                f"store it with `aegisctl secrets set {name}`"
            )
        if not isinstance(value, str):
            raise SecretsUnavailable(f"the keyring returned a non-text value for {name}")
        return value

    async def present(self, name: str) -> bool:
        check_secret_name(name)
        backend = await self._resolve()
        value = await self._call(
            lambda: backend.get_password(self.service, name), backend, f"looking up {name}"
        )
        return value is not None

    async def set(self, name: str, value: str) -> None:
        check_secret_value(name, value)
        backend = await self._resolve()
        await self._call(
            lambda: backend.set_password(self.service, name, value), backend, f"storing {name}"
        )

    async def delete(self, name: str) -> bool:
        check_secret_name(name)
        backend = await self._resolve()

        def delete_if_present() -> bool:
            # Ask first: backends signal "absent" with PasswordDeleteError but also raise it
            # for real failures, and only the first should read as "nothing to delete".
            if backend.get_password(self.service, name) is None:
                return False
            backend.delete_password(self.service, name)
            return True

        return await self._call(delete_if_present, backend, f"deleting {name}")

    async def _resolve(self) -> KeyringBackend:
        if self._backend is not None:
            return self._backend
        chosen = await self._call(self._choose, None, "opening the keyring")
        self._backend = chosen
        return chosen

    def _choose(self) -> KeyringBackend:
        """Runs in the worker: keyring's choice may probe D-Bus, which blocks."""
        from keyring.backends.chainer import ChainerBackend

        backend = self._given
        if backend is None:
            import keyring

            backend = keyring.get_keyring()
        why = refusal_reason(backend)
        if why is not None:
            raise _refused(backend, why)
        if isinstance(backend, ChainerBackend):
            member = _first_acceptable(backend)
            assert member is not None  # refusal_reason said so
            backend = member
        log.debug("keyring backend %s", backend_path(backend))
        return backend

    async def _call(self, fn: Callable[[], T], backend: object | None, doing: str) -> T:
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        limiter = self._limiter

        def guarded() -> T | SecretsUnavailable:
            try:
                return fn()
            except SecretsUnavailable as exc:
                return exc
            except Exception as exc:
                return _translate(exc, backend, doing)

        with trio.move_on_after(self.timeout) as scope:
            result = await trio.to_thread.run_sync(guarded, abandon_on_cancel=True, limiter=limiter)
        if scope.cancelled_caught:
            raise SecretsUnavailable(
                f"{_where(backend)} did not answer within {self.timeout:g} s ({doing}); "
                f"it may be locked and waiting for an unlock prompt. {KEYRING_HINT}"
            )
        if isinstance(result, SecretsUnavailable):
            raise result
        return result

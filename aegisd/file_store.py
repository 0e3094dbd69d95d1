"""The ``file`` secret store: one file per secret, readable only by the daemon's account.

Owns ``FileSecretStore``: the directory (0700, owned by the daemon's uid) and its files (0600,
same owner), the refusal of anything else (another owner, a wider mode, a symlink, a
non-regular file) the way ssh refuses a world-readable key, atomic writes with the right
owner when root writes for the daemon (``sudo aegisctl secrets set --system``), and systemd
credentials: when ``$CREDENTIALS_DIRECTORY`` is set (``LoadCredentialEncrypted=`` in the unit)
a secret found there wins over the directory.

This backend protects the secrets only when the daemon runs as its own account (separated
mode): in same-uid mode every process of the person, the agent included, can read the files.

Must not: follow a symlink anywhere (``O_NOFOLLOW`` on every open, then ``fstat`` on the
descriptor, so nothing can be swapped between the check and the read); quote a secret value;
keep secrets in memory longer than one ``get``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets as pyrandom
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final, final

import platformdirs

from aegisd.config import APP, SecretsConfig
from aegisd.errors import SecretsUnavailable
from aegisd.secret_checks import MAX_SECRET_BYTES, check_secret_name, check_secret_value

__all__ = ["CREDENTIALS_ENV", "FileSecretStore", "default_secrets_dir"]

# Set by systemd for a unit with LoadCredential=/LoadCredentialEncrypted=/SetCredential=.
CREDENTIALS_ENV: Final = "CREDENTIALS_DIRECTORY"

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NOFOLLOW: Final = os.O_NOFOLLOW | os.O_CLOEXEC


def default_secrets_dir() -> Path:
    """``platformdirs.user_state_dir("aegis")/secrets`` (a system install sets ``dir``)."""
    return Path(platformdirs.user_state_dir(APP)) / "secrets"


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@final
class FileSecretStore:
    """Secrets as files ``DIR/<name>``.

    Args:
        directory: absolute path of the store (``[secrets] dir``).
        owner_uid: the uid that must own the directory and every file (default: ours). Root
            writing for the daemon passes the daemon's uid.
        credentials_dir: systemd's credentials directory; a secret there is preferred.
        set_hint: the command that stores a secret, for "missing" messages.

    Every method raises ``SecretsUnavailable`` with the fix when the directory or a file is
    unsafe; ``get`` also when the secret is not set.
    """

    backend_name = "file"

    def __init__(
        self,
        directory: Path,
        *,
        owner_uid: int | None = None,
        credentials_dir: Path | None = None,
        set_hint: str = "aegisctl secrets set",
    ) -> None:
        if not directory.is_absolute():
            raise SecretsUnavailable(
                f'[secrets] dir must be an absolute path for backend "file": {directory}'
            )
        self.directory = directory
        self.owner_uid = os.getuid() if owner_uid is None else owner_uid
        self.credentials_dir = credentials_dir
        self.set_hint = set_hint

    @classmethod
    def from_config(
        cls, cfg: SecretsConfig, environ: Mapping[str, str] | None = None
    ) -> FileSecretStore:
        env = os.environ if environ is None else environ
        directory = Path(cfg.dir).expanduser() if cfg.dir else default_secrets_dir()
        creds = env.get(CREDENTIALS_ENV)
        return cls(directory, credentials_dir=Path(creds) if creds else None)

    # ---- the SecretStore protocol --------------------------------------------------------
    # Plain synchronous file calls inside async methods: a few hundred bytes from a local
    # file, which never blocks long enough to be worth a worker thread.

    async def get(self, name: str) -> str:
        value = self._read(name)
        if value is None:
            raise SecretsUnavailable(
                f"secret {name!r} is not in {self.directory}; store it with "
                f"`{self.set_hint} {name}`"
            )
        return value

    async def present(self, name: str) -> bool:
        return self._read(name) is not None

    async def set(self, name: str, value: str) -> None:
        check_secret_value(name, value)
        data = value.encode("utf-8")
        dfd = self._open_dir(create=True)
        assert dfd is not None  # create=True never answers "missing"
        try:
            tmp = f".{name}.{pyrandom.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd)
            try:
                try:
                    os.fchmod(fd, 0o600)
                    if os.geteuid() != self.owner_uid:
                        os.fchown(fd, self.owner_uid, self._owner_gid())
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise
            os.fsync(dfd)
        except OSError as exc:
            raise SecretsUnavailable(
                f"cannot store {name} in {self.directory} ({exc.strerror})"
            ) from None
        finally:
            os.close(dfd)

    async def delete(self, name: str) -> bool:
        check_secret_name(name)
        dfd = self._open_dir(create=False)
        if dfd is None:
            return False
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SecretsUnavailable(
                f"cannot delete {name} from {self.directory} ({exc.strerror})"
            ) from None
        finally:
            os.close(dfd)
        return True

    def check(self) -> None:
        """Refuse an unsafe store (what the daemon runs at start): directory and every file.

        A missing directory is not an error here (nothing is stored yet); ``get`` says so.
        """
        dfd = self._open_dir(create=False)
        if dfd is None:
            return
        try:
            for entry in os.listdir(dfd):
                if not entry.startswith("."):
                    self._read_at(dfd, entry, self.directory / entry, credential=False, check=True)
        finally:
            os.close(dfd)

    # ---- the checks ----------------------------------------------------------------------

    def _owner_gid(self) -> int:
        try:
            return pwd.getpwuid(self.owner_uid).pw_gid
        except KeyError:
            return os.getgid()

    def _fix_owner(self, path: Path) -> str:
        account = _account(self.owner_uid)
        return f"sudo chown {account}: {path}"

    def _open_dir(self, *, create: bool) -> int | None:
        path = self.directory
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                return None
            self._make_dir()
            dfd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SecretsUnavailable(
                    f"{path}: the secrets directory is a symlink or not a directory; refusing "
                    f"it. Remove it and store the secrets again with `{self.set_hint} NAME`"
                ) from None
            raise SecretsUnavailable(
                f"{path}: cannot open the secrets directory ({exc.strerror})"
            ) from None
        st = os.fstat(dfd)
        problem = None
        if st.st_uid != self.owner_uid:
            problem = (
                f"it is owned by {_account(st.st_uid)}, not {_account(self.owner_uid)}; fix with "
                f"`{self._fix_owner(path)}`"
            )
        elif stat.S_IMODE(st.st_mode) != 0o700:
            problem = (
                f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0700; fix with `chmod 700 {path}`"
            )
        if problem:
            os.close(dfd)
            raise SecretsUnavailable(f"{path}: refusing the secrets directory: {problem}")
        return dfd

    def _make_dir(self) -> None:
        path = self.directory
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700)  # mkdir's mode is filtered through the umask
            if os.geteuid() != self.owner_uid:
                os.chown(path, self.owner_uid, self._owner_gid(), follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SecretsUnavailable(
                f"{path}: cannot create the secrets directory ({exc.strerror})"
            ) from None

    def _read(self, name: str) -> str | None:
        check_secret_name(name)
        if self.credentials_dir is not None:
            value = self._read_credential(name)
            if value is not None:
                return value
        dfd = self._open_dir(create=False)
        if dfd is None:
            return None
        try:
            return self._read_at(dfd, name, self.directory / name, credential=False)
        finally:
            os.close(dfd)

    def _read_credential(self, name: str) -> str | None:
        assert self.credentials_dir is not None
        path = self.credentials_dir
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsUnavailable(
                f"${CREDENTIALS_ENV} ({path}) cannot be opened ({exc.strerror}); refusing it"
            ) from None
        try:
            st = os.fstat(dfd)
            if stat.S_IMODE(st.st_mode) & 0o022 or st.st_uid not in (0, self.owner_uid):
                raise SecretsUnavailable(
                    f"${CREDENTIALS_ENV} ({path}) is writable by others or has a foreign "
                    "owner; refusing it (systemd creates it read-only for the service)"
                )
            return self._read_at(dfd, name, path / name, credential=True)
        finally:
            os.close(dfd)

    def _read_at(
        self, dfd: int, name: str, path: Path, *, credential: bool, check: bool = False
    ) -> str | None:
        """The value of ``name`` in ``dfd`` after the checks (``check``: checks only, "")."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SecretsUnavailable(
                    f"{path}: is a symlink; refusing it. Remove it and store the secret "
                    f"again with `{self.set_hint} {name}`"
                ) from None
            raise SecretsUnavailable(f"{path}: cannot read ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            owners = (0, self.owner_uid) if credential else (self.owner_uid,)
            if not stat.S_ISREG(st.st_mode):
                raise SecretsUnavailable(f"{path}: not a regular file; refusing it")
            if st.st_uid not in owners:
                raise SecretsUnavailable(
                    f"{path}: owned by {_account(st.st_uid)}, not "
                    f"{_account(self.owner_uid)}; refusing it. Fix with "
                    f"`{self._fix_owner(path)}`"
                )
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise SecretsUnavailable(
                    f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; refusing "
                    f"it. Fix with `chmod 600 {path}` (and replace the secret: others may have "
                    "read it)"
                )
            if check:
                return ""  # the value is not read where it is not needed
            raw = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_SECRET_BYTES:
            raise SecretsUnavailable(f"{path}: larger than {MAX_SECRET_BYTES} bytes; refusing it")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretsUnavailable(f"{path}: not UTF-8 text; store it again") from None


def _unlink_quietly(name: str, dfd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dfd)

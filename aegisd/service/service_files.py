"""Service definitions for aegisd: the systemd user units and the launchd agent plist.

Owns the text of ``aegisd.service``, ``aegisd.socket`` and ``dev.aegis.aegisd.plist`` (the
single source: the copies under ``systemd/`` and ``launchd/`` in the repository are the
``example_files()`` output, and a test keeps them equal), the quoting rules of each format, and
the checks a service manager would otherwise report only at load time (absolute paths, the
socket path length). Pure functions: no file or process I/O here; ``aegisctl service`` writes
the files and runs ``systemctl``/``launchctl``.

Hardening choices and their limits in a *user* unit are explained in docs/OPERATIONS.md. The
two rules that matter most: no ``PrivateUsers=`` (the daemon must read ``/proc/<peer>/exe`` to
identify callers), and no mount-namespace options that would hide ``/run/user/<uid>/bus`` (the
Secret Service keyring is reached over the D-Bus session bus).
"""

from __future__ import annotations

import plistlib
import re
from typing import Final

from aegisd.errors import ConfigError

__all__ = [
    "LAUNCHD_LABEL",
    "LAUNCHD_PLIST",
    "LAUNCHD_SOCKET_KEY",
    "SUN_PATH_MAX",
    "SYSTEMD_DEFAULT_LISTEN",
    "SYSTEMD_SERVICE",
    "SYSTEMD_SOCKET",
    "check_absolute",
    "example_files",
    "launchd_plist",
    "render_launchd_plist",
    "render_systemd_service",
    "render_systemd_socket",
    "systemd_arg",
]

SYSTEMD_SERVICE: Final = "aegisd.service"
SYSTEMD_SOCKET: Final = "aegisd.socket"
# %t is $XDG_RUNTIME_DIR in a user manager: the same place as platformdirs.user_runtime_dir.
SYSTEMD_DEFAULT_LISTEN: Final = "%t/aegis/aegisd.sock"

LAUNCHD_LABEL: Final = "dev.aegis.aegisd"
LAUNCHD_PLIST: Final = f"{LAUNCHD_LABEL}.plist"
# aegisd calls launch_activate_socket("Listeners"): the key under Sockets must match.
LAUNCHD_SOCKET_KEY: Final = "Listeners"

# sockaddr_un.sun_path is 104 bytes on macOS (108 on Linux), one of them the NUL.
SUN_PATH_MAX: Final = 103

# Exit codes after which restarting cannot help (aegisd.errors: ConfigError 78,
# SecretsUnavailable 79); socket activation still starts it again on the next connection.
_NO_RESTART_STATUS: Final = "78 79"

_SERVICE_TEMPLATE: Final = """\
{header}[Unit]
Description=Aegis credential broker for local AI agents
Requires=aegisd.socket
After=aegisd.socket
StartLimitIntervalSec=60s
StartLimitBurst=5

[Service]
Type=notify
ExecStart={exec_start}
# SIGHUP re-reads the config and swaps the policy atomically (an invalid file keeps the old)
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
RestartPreventExitStatus={no_restart}
TimeoutStopSec=30s

# Hardening that a user manager enforces without PrivateUsers= (seccomp, no_new_privs,
# umask, kernel keyring). See docs/OPERATIONS.md for what cannot apply to a user unit.
NoNewPrivileges=yes
LockPersonality=yes
# No W+X memory: fine for aegisd's stack (no cffi/ctypes callbacks); see OPERATIONS.md.
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
# AF_UNIX: the socket and D-Bus; AF_INET/AF_INET6: HTTPS to Auth0 and proxied APIs.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @swap @reboot @raw-io
SystemCallFilter=~@module @obsolete @clock @cpu-emulation @debug
SystemCallErrorNumber=EPERM
UMask=0077
KeyringMode=private

[Install]
Also=aegisd.socket
"""

_SOCKET_TEMPLATE: Final = """\
{header}[Unit]
Description=Aegis credential broker socket

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

_EXAMPLE_NOTE: Final = (
    "# Example for a `pipx install` / `pip install --user` layout. `aegisctl service install`\n"
    "# writes this file with the absolute paths of your installation; prefer that.\n"
)


def check_absolute(what: str, path: str) -> None:
    if not path.startswith("/"):
        raise ConfigError(f"{what} must be an absolute path for a service definition: {path}")
    if any(c in path for c in "\n\r\x00"):
        raise ConfigError(f"{what} contains a control character: {path!r}")


def systemd_arg(arg: str) -> str:
    """Quote one ExecStart= argument: specifiers (%), variables ($), quotes, backslashes."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    if escaped and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", escaped):
        return escaped
    return f'"{escaped}"'


def render_systemd_service(aegisd: str, config: str | None, *, example: bool = False) -> str:
    """The ``aegisd.service`` user unit.

    Args:
        aegisd: absolute path of the ``aegisd`` executable.
        config: absolute path passed as ``--config``; ``None`` leaves aegisd's default.

    Raises:
        ConfigError: a path is relative or contains a control character.
    """
    if example:
        exec_start = aegisd  # a deliberate specifier such as %h, not a literal path
    else:
        check_absolute("the aegisd executable", aegisd)
        exec_start = systemd_arg(aegisd)
    if config is not None:
        check_absolute("the config file", config)
        exec_start += " --config " + systemd_arg(config)
    return _SERVICE_TEMPLATE.format(
        header=_EXAMPLE_NOTE if example else "",
        exec_start=exec_start,
        no_restart=_NO_RESTART_STATUS,
    )


def render_systemd_socket(socket_path: str | None, *, example: bool = False) -> str:
    """The ``aegisd.socket`` unit; ``None`` listens on ``%t/aegis/aegisd.sock``.

    Raises:
        ConfigError: the path is relative, has a control character, or is too long.
    """
    if socket_path is None:
        listen = SYSTEMD_DEFAULT_LISTEN
    else:
        check_absolute("the socket", socket_path)
        if len(socket_path.encode()) > SUN_PATH_MAX:
            raise ConfigError(f"socket path longer than {SUN_PATH_MAX} bytes: {socket_path}")
        listen = socket_path.replace("%", "%%")
    return _SOCKET_TEMPLATE.format(header=_EXAMPLE_NOTE if example else "", listen=listen)


def launchd_plist(
    aegisd: str, config: str | None, socket_path: str, log_path: str
) -> dict[str, object]:
    """The LaunchAgent as a dict (what ``plistlib`` writes), after checking every path.

    Raises:
        ConfigError: a path is relative or has a control character, or the socket path is
            longer than macOS allows.
    """
    check_absolute("the aegisd executable", aegisd)
    check_absolute("the socket", socket_path)
    check_absolute("the log file", log_path)
    if len(socket_path.encode()) > SUN_PATH_MAX:
        raise ConfigError(f"socket path longer than {SUN_PATH_MAX} bytes: {socket_path}")
    argv = [aegisd]
    if config is not None:
        check_absolute("the config file", config)
        argv += ["--config", config]
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": argv,
        "Sockets": {
            LAUNCHD_SOCKET_KEY: {
                "SockPathName": socket_path,
                "SockPathMode": 0o600,  # plist integers are decimal: written as 384
            }
        },
        # Restart after a crash, not after a clean SIGTERM exit; the socket still wakes it.
        "KeepAlive": {"SuccessfulExit": False},
        "RunAtLoad": True,
        "ProcessType": "Background",
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }


def render_launchd_plist(
    aegisd: str, config: str | None, socket_path: str, log_path: str, *, example: bool = False
) -> bytes:
    """``dev.aegis.aegisd.plist`` as XML (see ``launchd_plist`` for the checks)."""
    data = plistlib.dumps(launchd_plist(aegisd, config, socket_path, log_path), sort_keys=False)
    if example:
        # XML comments are allowed after the DOCTYPE; launchd and plistlib ignore them.
        note = (
            b"<!-- Example for user 'you'. `aegisctl service install` writes this file with\n"
            b"     the absolute paths of your installation; prefer that. -->\n"
        )
        marker = b"<plist "
        at = data.index(marker)
        data = data[:at] + note + data[at:]
    return data


def example_files() -> dict[str, bytes]:
    """The repository copies: ``{"systemd/aegisd.service": text, ...}``."""
    home = "/Users/you"
    return {
        f"systemd/{SYSTEMD_SERVICE}": render_systemd_service(
            "%h/.local/bin/aegisd", None, example=True
        ).encode(),
        f"systemd/{SYSTEMD_SOCKET}": render_systemd_socket(None, example=True).encode(),
        f"launchd/{LAUNCHD_PLIST}": render_launchd_plist(
            f"{home}/.local/bin/aegisd",
            f"{home}/Library/Application Support/aegis/aegisd.toml",
            f"{home}/Library/Caches/TemporaryItems/aegis/aegisd.sock",
            f"{home}/Library/Logs/aegis/aegisd.log",
            example=True,
        ),
    }

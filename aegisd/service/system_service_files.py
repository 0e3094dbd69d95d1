"""Service definitions for separated mode: the system units, tmpfiles entry and LaunchDaemon.

Owns the text of the system ``aegisd.service`` and ``aegisd.socket`` (under
``/etc/systemd/system``), the ``tmpfiles.d`` line that gives ``/run/aegis`` its owner, group
and mode at every boot, and the macOS LaunchDaemon (``/Library/LaunchDaemons``). Pure
functions like ``aegisd.service.service_files`` (whose quoting and path checks it reuses): no
file or process I/O; ``aegisctl service install --system`` writes them.

Hardening (docs/OPERATIONS.md has the reasoning and the ``systemd-analyze security`` figures):
everything a system unit can lock down, except what peer identification needs. No
``PrivateUsers=`` (SO_PEERCRED would report every other uid as ``nobody``), no
``ProtectProc=invisible`` (the daemon reads the person's ``/proc/<pid>/cmdline`` and
``stat``). By default no capability at all: across uids ``/proc/<pid>/exe`` is then unreadable
and exe/sha256 caller rules cannot match. ``verify_exe`` adds exactly ``CAP_SYS_PTRACE``
(bounding and ambient set) so they can.
"""

from __future__ import annotations

import plistlib
from typing import Final

from aegisd.accounts import CLIENTS_GROUP, SystemLayout
from aegisd.errors import ConfigError
from aegisd.service.service_files import (
    LAUNCHD_SOCKET_KEY,
    SUN_PATH_MAX,
    check_absolute,
    systemd_arg,
)

__all__ = [
    "LAUNCHD_DAEMON_LABEL",
    "LAUNCHD_DAEMON_PLIST",
    "TMPFILES_CONF",
    "launchd_daemon_plist",
    "render_launchd_daemon_plist",
    "render_system_service",
    "render_system_socket",
    "render_tmpfiles",
]

TMPFILES_CONF: Final = "aegis.conf"
LAUNCHD_DAEMON_LABEL: Final = "dev.aegis.aegisd"
LAUNCHD_DAEMON_PLIST: Final = f"{LAUNCHD_DAEMON_LABEL}.plist"

_SYSTEM_SERVICE: Final = """\
# Written by `aegisctl service install --system`; see docs/OPERATIONS.md (separated mode).
[Unit]
Description=Aegis credential broker for local AI agents (separated mode)
Requires=aegisd.socket
After=aegisd.socket network-online.target
Wants=network-online.target
StartLimitIntervalSec=60s
StartLimitBurst=5

[Service]
Type=notify
User={account}
Group={account}
ExecStart={exec_start}
# SIGHUP re-reads the config and swaps the policy atomically (an invalid file keeps the old)
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
RestartPreventExitStatus=78 79
TimeoutStopSec=30s

# /var/lib/aegis: secrets, audit log, active policy. Nothing else is writable.
StateDirectory=aegis
StateDirectoryMode=0700
UMask=0077
{capabilities}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={protect_home}
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateIPC=yes
RemoveIPC=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Not "invisible": the daemon reads the person's /proc/<pid>/cmdline and stat to name callers.
ProtectProc=default
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
# AF_UNIX: the socket; AF_INET/AF_INET6: HTTPS to Auth0 and the proxied APIs.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @swap @reboot @raw-io
SystemCallFilter=~@module @obsolete @clock @cpu-emulation @debug
SystemCallErrorNumber=EPERM
KeyringMode=private
# `aegisctl secrets set --system --systemd-creds` adds LoadCredentialEncrypted= lines in
# aegisd.service.d/credentials.conf; aegisd reads $CREDENTIALS_DIRECTORY before its files.

[Install]
Also=aegisd.socket
"""

_NO_CAPABILITIES: Final = """\
# No capability: exe/sha256 caller rules cannot match a peer of another uid ("exe unverified").
# `aegisctl service install --system --verify-exe` grants exactly CAP_SYS_PTRACE instead.
CapabilityBoundingSet=
AmbientCapabilities="""

_PTRACE_ONLY: Final = """\
# --verify-exe: CAP_SYS_PTRACE lets the daemon read /proc/<pid>/exe of the person's processes
# (exe/sha256 caller rules). It would also allow ptrace(2), which the ~@debug filter refuses.
CapabilityBoundingSet=CAP_SYS_PTRACE
AmbientCapabilities=CAP_SYS_PTRACE"""

_SYSTEM_SOCKET: Final = """\
# Written by `aegisctl service install --system`; see docs/OPERATIONS.md (separated mode).
[Unit]
Description=Aegis credential broker socket (separated mode)

[Socket]
ListenStream={listen}
SocketUser={account}
SocketGroup={group}
SocketMode=0660
# Used only if the directory is missing: tmpfiles.d/aegis.conf creates it at boot
# ({account}:{group}, 0750) so that members of {group} can reach the socket.
DirectoryMode=0750
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def render_system_service(
    aegisd: str,
    layout: SystemLayout,
    *,
    verify_exe: bool = False,
) -> str:
    """The system ``aegisd.service``.

    Args:
        aegisd: absolute path of the ``aegisd`` executable (of a system-wide installation).
        layout: the separated-mode paths and account.
        verify_exe: grant ``CAP_SYS_PTRACE`` so exe/sha256 caller rules work across uids.

    Raises:
        ConfigError: a path is relative or contains a control character.
    """
    check_absolute("the aegisd executable", aegisd)
    exec_start = f"{systemd_arg(aegisd)} --config {systemd_arg(str(layout.config))}"
    # An installation under /home stays readable (read-only), one elsewhere never sees homes.
    home_prefixes = ("/home/", "/root/", "/run/user/")
    protect_home = "read-only" if verify_exe or aegisd.startswith(home_prefixes) else "yes"
    return _SYSTEM_SERVICE.format(
        account=layout.account,
        exec_start=exec_start,
        capabilities=_PTRACE_ONLY if verify_exe else _NO_CAPABILITIES,
        protect_home=protect_home,
    )


def render_system_socket(layout: SystemLayout) -> str:
    """The system ``aegisd.socket``: ``/run/aegis/aegisd.sock``, aegis:aegis-clients 0660."""
    socket = str(layout.socket)
    if len(socket.encode()) > SUN_PATH_MAX:
        raise ConfigError(f"socket path longer than {SUN_PATH_MAX} bytes: {socket}")
    return _SYSTEM_SOCKET.format(
        listen=socket.replace("%", "%%"), account=layout.account, group=CLIENTS_GROUP
    )


def render_tmpfiles(layout: SystemLayout) -> str:
    """``/etc/tmpfiles.d/aegis.conf``: the socket directory, recreated at every boot.

    0750 with the group ``aegis-clients``: only that group can reach the socket, and the
    daemon (checking the directory at start) accepts exactly that with ``socket_group``.
    """
    return (
        "# Written by `aegisctl service install --system`: the separated-mode socket directory.\n"
        f"d {layout.runtime_dir} 0750 {layout.account} {CLIENTS_GROUP} -\n"
    )


def launchd_daemon_plist(
    aegisd: str, layout: SystemLayout, log_path: str, *, owner_uid: int, clients_gid: int
) -> dict[str, object]:
    """The LaunchDaemon as a dict: runs as ``_aegis``, socket group ``aegis-clients`` 0660.

    launchd (root) creates the socket; ``SockPathOwner``/``SockPathGroup`` take numeric ids,
    so the plan that creates the accounts passes the ids it gives them.

    Raises:
        ConfigError: a path is relative or the socket path is too long for macOS.
    """
    check_absolute("the aegisd executable", aegisd)
    check_absolute("the log file", log_path)
    socket = str(layout.socket)
    if len(socket.encode()) > SUN_PATH_MAX:
        raise ConfigError(f"socket path longer than {SUN_PATH_MAX} bytes: {socket}")
    return {
        "Label": LAUNCHD_DAEMON_LABEL,
        "ProgramArguments": [aegisd, "--config", str(layout.config)],
        "UserName": layout.account,
        "GroupName": layout.account,
        "Sockets": {
            LAUNCHD_SOCKET_KEY: {
                "SockPathName": socket,
                "SockPathMode": 0o660,  # plist integers are decimal: written as 432
                "SockPathOwner": owner_uid,
                "SockPathGroup": clients_gid,
            }
        },
        "KeepAlive": {"SuccessfulExit": False},
        "RunAtLoad": True,
        "ProcessType": "Background",
        "Umask": 0o077,
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }


def render_launchd_daemon_plist(
    aegisd: str, layout: SystemLayout, log_path: str, *, owner_uid: int, clients_gid: int
) -> bytes:
    plist = launchd_daemon_plist(
        aegisd, layout, log_path, owner_uid=owner_uid, clients_gid=clients_gid
    )
    return plistlib.dumps(plist, sort_keys=False)

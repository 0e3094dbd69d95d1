"""Separated mode as data: the plan of ``aegisctl service install|uninstall --system``.

Owns what a separated-mode install consists of on Linux and macOS: the daemon's account and
the clients' group (``aegisd.accounts``), the person's membership and uid in
``[daemon] allowed_uids``, ``/etc/aegis/aegisd.toml`` rebuilt from the person's config with
the system paths and the ``file`` secret store, the state, secrets and socket directories with
their owners and modes, and the system units (or the LaunchDaemon). Plans are lists of
``aegisctl.install_steps`` steps computed from a ``SystemInstallation`` holding every fact
read from the machine (``aegisctl.system_install`` reads them), so that ``--dry-run`` shows
exactly what a real run does and tests build plans for a platform they do not run on. Pure:
no I/O here, and never a secret.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from aegisctl.install_steps import MakeDir, RemoveFile, RemoveTree, Run, Step, WriteFile
from aegisd.accounts import CLIENTS_GROUP, SystemLayout
from aegisd.config import DaemonConfig, parse_config
from aegisd.secrets import needed_secrets
from aegisd.service.system_service_files import (
    LAUNCHD_DAEMON_LABEL,
    LAUNCHD_DAEMON_PLIST,
    TMPFILES_CONF,
    render_launchd_daemon_plist,
    render_system_service,
    render_system_socket,
    render_tmpfiles,
)
from aegisd.toml_text import dumps

__all__ = [
    "LAUNCH_DAEMONS",
    "MACOS_CLIENTS_GID",
    "MACOS_DAEMON_UID",
    "SYSTEM_UNIT_DIR",
    "SystemInstallation",
    "exe_rules",
    "plan_system_install",
    "plan_system_uninstall",
    "render_system_config",
    "start_note",
    "system_files",
]

Platform = Literal["linux", "macos"]

SYSTEM_UNIT_DIR: Final = Path("/etc/systemd/system")
TMPFILES_DIR: Final = Path("/etc/tmpfiles.d")
LAUNCH_DAEMONS: Final = Path("/Library/LaunchDaemons")
MACOS_LOG: Final = Path("/Library/Logs/Aegis/aegisd.log")
# macOS daemon accounts live below 500 (hidden from the login window); these are the ids the
# plan gives _aegis and aegis-clients. The dscl steps fail loudly if an id is taken.
MACOS_DAEMON_UID: Final = 481
MACOS_CLIENTS_GID: Final = 482
NOLOGIN: Final = "/usr/sbin/nologin"
REAL_NAME: Final = "Aegis credential broker"


@dataclass(frozen=True)
class SystemInstallation:
    """Every fact a separated-mode plan depends on (tests build one directly)."""

    platform: Platform
    layout: SystemLayout
    aegisd: Path
    person: str
    config_text: bytes  # the rendered /etc/aegis/aegisd.toml
    verify_exe: bool = False
    service_manager: bool = True  # systemd is PID 1 (always true for launchd)
    start: bool = True
    have_clients_group: bool = False
    have_account_group: bool = False
    have_account: bool = False
    account_in_group: bool = False
    person_in_group: bool = False

    @property
    def account(self) -> str:
        return self.layout.account


# ---- the config the daemon gets ------------------------------------------------------------


def render_system_config(
    source: bytes, source_name: str, layout: SystemLayout, person_uid: int
) -> bytes:
    """The person's config with the separated-mode paths, secrets and allowed uid.

    Raises:
        ConfigError: the source is not a valid config, or the result would not be.
    """
    parse_config(source, source_name)  # the person's own mistakes, reported against their file
    raw = tomllib.loads(source.decode("utf-8"))
    raw.pop("source", None)
    daemon = dict(raw.get("daemon", {}))
    daemon["socket"] = str(layout.socket)
    daemon["audit_log"] = str(layout.audit_log)
    daemon["allowed_uids"] = sorted({*daemon.get("allowed_uids", []), person_uid})
    # The group socket and the daemon-owned policy file, where this daemon knows the keys
    # (they arrive with the separated-mode daemon changes; an older one would refuse them).
    known = DaemonConfig.__struct_fields__
    if "socket_group" in known:
        daemon["socket_group"] = CLIENTS_GROUP
    if "policy_file" in known:
        daemon["policy_file"] = str(layout.state_dir / "policy.toml")
    raw["daemon"] = daemon
    raw["secrets"] = {"backend": "file", "dir": str(layout.secrets_dir)}
    header = (
        f"# Written by `aegisctl service install --system` from {source_name}.\n"
        "# Root edits this file and reloads the daemon (docs/OPERATIONS.md, separated mode).\n"
        "# [daemon] socket, audit_log and [secrets] are the separated-mode layout: keep them.\n\n"
    )
    text = (header + dumps(raw)).encode()
    parse_config(text, str(layout.config))
    return text


def exe_rules(config_text: bytes) -> list[str]:
    """Names of caller rules that need the peer's executable (exe or sha256)."""
    cfg = parse_config(config_text)
    return [rule.name for rule in cfg.callers if rule.exe or rule.sha256]


# ---- the plans --------------------------------------------------------------------------


def system_files(inst: SystemInstallation) -> dict[Path, bytes]:
    """The service-manager files ``install --system`` writes (config and tmpfiles aside)."""
    layout = inst.layout
    if inst.platform == "macos":
        plist = render_launchd_daemon_plist(
            str(inst.aegisd),
            layout,
            str(MACOS_LOG),
            owner_uid=MACOS_DAEMON_UID,
            clients_gid=MACOS_CLIENTS_GID,
        )
        return {LAUNCH_DAEMONS / LAUNCHD_DAEMON_PLIST: plist}
    service = render_system_service(str(inst.aegisd), layout, verify_exe=inst.verify_exe)
    return {
        SYSTEM_UNIT_DIR / "aegisd.service": service.encode(),
        SYSTEM_UNIT_DIR / "aegisd.socket": render_system_socket(layout).encode(),
        TMPFILES_DIR / TMPFILES_CONF: render_tmpfiles(layout).encode(),
    }


def _linux_accounts(inst: SystemInstallation) -> list[Step]:
    steps: list[Step] = []
    if not inst.have_clients_group:
        steps.append(Run(("groupadd", "--system", CLIENTS_GROUP)))
    if not inst.have_account:
        group = ("--gid", inst.account) if inst.have_account_group else ("--user-group",)
        steps.append(
            Run(
                (
                    "useradd",
                    "--system",
                    *group,
                    "--home-dir",
                    str(inst.layout.state_dir),
                    "--no-create-home",
                    "--shell",
                    NOLOGIN,
                    "--comment",
                    REAL_NAME,
                    # in the clients' group so the daemon can give its socket that group
                    "--groups",
                    CLIENTS_GROUP,
                    inst.account,
                )
            )
        )
    elif not inst.account_in_group:
        steps.append(Run(("usermod", "--append", "--groups", CLIENTS_GROUP, inst.account)))
    if not inst.person_in_group:
        steps.append(Run(("usermod", "--append", "--groups", CLIENTS_GROUP, inst.person)))
    return steps


def _macos_accounts(inst: SystemInstallation) -> list[Step]:
    account, uid, gid = inst.account, str(MACOS_DAEMON_UID), str(MACOS_CLIENTS_GID)
    steps: list[Step] = []
    if not inst.have_clients_group:
        steps += [
            Run(("dscl", ".", "-create", f"/Groups/{CLIENTS_GROUP}")),
            Run(("dscl", ".", "-create", f"/Groups/{CLIENTS_GROUP}", "PrimaryGroupID", gid)),
            Run(("dscl", ".", "-create", f"/Groups/{CLIENTS_GROUP}", "RealName", "Aegis clients")),
        ]
    if not inst.have_account:
        user = f"/Users/{account}"
        steps += [
            Run(("dscl", ".", "-create", f"/Groups/{account}")),
            Run(("dscl", ".", "-create", f"/Groups/{account}", "PrimaryGroupID", uid)),
            Run(("dscl", ".", "-create", user)),
            Run(("dscl", ".", "-create", user, "UniqueID", uid)),
            Run(("dscl", ".", "-create", user, "PrimaryGroupID", uid)),
            Run(("dscl", ".", "-create", user, "UserShell", "/usr/bin/false")),
            Run(("dscl", ".", "-create", user, "NFSHomeDirectory", str(inst.layout.state_dir))),
            Run(("dscl", ".", "-create", user, "RealName", REAL_NAME)),
            Run(("dscl", ".", "-create", user, "Password", "*")),
            Run(("dscl", ".", "-create", user, "IsHidden", "1")),
        ]
    if not inst.person_in_group:
        steps.append(
            Run(("dseditgroup", "-o", "edit", "-a", inst.person, "-t", "user", CLIENTS_GROUP))
        )
    return steps


def _layout_steps(inst: SystemInstallation) -> list[Step]:
    layout, account = inst.layout, inst.account
    root_group = "wheel" if inst.platform == "macos" else "root"
    return [
        MakeDir(layout.config_dir, 0o750, "root", account),
        WriteFile(layout.config, inst.config_text, 0o640, "root", account),
        MakeDir(layout.state_dir, 0o700, account, account),
        MakeDir(layout.secrets_dir, 0o700, account, account),
        # the group may enter (and connect to the 0660 socket); see tmpfiles.d/aegis.conf
        MakeDir(layout.runtime_dir, 0o750, account, CLIENTS_GROUP),
        *(
            [MakeDir(MACOS_LOG.parent, 0o750, account, root_group)]
            if inst.platform == "macos"
            else []
        ),
    ]


def plan_system_install(inst: SystemInstallation) -> list[Step]:
    files = system_files(inst)
    accounts = _macos_accounts(inst) if inst.platform == "macos" else _linux_accounts(inst)
    steps: list[Step] = [*accounts, *_layout_steps(inst)]
    if inst.platform == "macos":
        [(plist_path, plist)] = files.items()
        target = f"system/{LAUNCHD_DAEMON_LABEL}"
        steps += [
            Run(("launchctl", "bootout", target), check=False),
            WriteFile(plist_path, plist, 0o644, "root", "wheel"),
        ]
        if inst.start:
            steps.append(Run(("launchctl", "bootstrap", "system", str(plist_path))))
        return steps
    steps += [
        MakeDir(SYSTEM_UNIT_DIR, 0o755),
        MakeDir(TMPFILES_DIR, 0o755),
        *(WriteFile(path, content, 0o644) for path, content in files.items()),
    ]
    if inst.service_manager:
        steps.append(Run(("systemctl", "daemon-reload")))
        if inst.start:
            steps += [
                Run(("systemctl", "enable", "--now", "aegisd.socket")),
                # A daemon already running keeps its old ExecStart and config until restarted.
                Run(("systemctl", "try-restart", "aegisd.service")),
            ]
    return steps


def plan_system_uninstall(
    platform: Platform,
    layout: SystemLayout,
    *,
    service_manager: bool,
    purge: bool,
    have_account: bool,
    have_clients_group: bool,
) -> list[Step]:
    """Stop and remove what install wrote; the state (audit log) and account stay unless purge."""
    steps: list[Step] = []
    if platform == "macos":
        steps += [
            Run(("launchctl", "bootout", f"system/{LAUNCHD_DAEMON_LABEL}"), check=False),
            RemoveFile(LAUNCH_DAEMONS / LAUNCHD_DAEMON_PLIST),
        ]
    else:
        if service_manager:
            steps.append(
                Run(
                    ("systemctl", "disable", "--now", "aegisd.socket", "aegisd.service"),
                    check=False,
                )
            )
        steps += [
            RemoveFile(SYSTEM_UNIT_DIR / "aegisd.service"),
            RemoveFile(SYSTEM_UNIT_DIR / "aegisd.socket"),
            RemoveFile(TMPFILES_DIR / TMPFILES_CONF),
            # the drop-in of `secrets set --system --systemd-creds`, if any
            RemoveTree(SYSTEM_UNIT_DIR / "aegisd.service.d"),
        ]
        if service_manager:
            steps.append(Run(("systemctl", "daemon-reload")))
    steps += [
        RemoveTree(layout.runtime_dir),
        RemoveTree(layout.config_dir),
        RemoveTree(layout.secrets_dir),
    ]
    if not purge:
        return steps
    steps.append(RemoveTree(layout.state_dir))
    if platform == "macos":
        steps += [
            RemoveTree(MACOS_LOG.parent),
            *([Run(("dscl", ".", "-delete", f"/Users/{layout.account}"))] if have_account else []),
            Run(("dscl", ".", "-delete", f"/Groups/{layout.account}"), check=False),
            *(
                [Run(("dscl", ".", "-delete", f"/Groups/{CLIENTS_GROUP}"))]
                if have_clients_group
                else []
            ),
        ]
        return steps
    if have_account:
        # userdel also removes the account's own group (USERGROUPS_ENAB, Debian's default).
        steps.append(Run(("userdel", layout.account)))
    if have_clients_group:
        steps.append(Run(("groupdel", CLIENTS_GROUP)))
    return steps


def start_note(inst: SystemInstallation) -> str:
    layout = inst.layout
    needed = needed_secrets(parse_config(inst.config_text))
    aegisctl = inst.aegisd.parent / "aegisctl"
    lines = []
    if needed:
        lines.append("Store the secrets the config needs (hidden prompt, or pipe them on stdin):")
        lines += [f"    sudo {aegisctl} secrets set --system {n}" for n in needed]
    if inst.platform == "macos":
        lines.append(
            f"aegisd runs as {inst.account} under launchd (system/{LAUNCHD_DAEMON_LABEL})."
        )
    elif inst.service_manager:
        if inst.start:
            lines.append("aegisd.socket is enabled: aegisd starts on the first connection.")
        else:
            lines.append("Start it with: sudo systemctl enable --now aegisd.socket")
        lines.append("After editing the config: sudo systemctl reload aegisd")
    else:
        lines += [
            "systemd is not running here (a container?): start aegisd by hand, as its account:",
            f"    sudo runuser -u {inst.account} -- {inst.aegisd} --config {layout.config}",
            f"{layout.runtime_dir} does not survive a reboot; recreate it before starting with:",
            f"    sudo install -d -o {inst.account} -g {CLIENTS_GROUP} -m 0750 "
            f"{layout.runtime_dir}",
        ]
    rules = exe_rules(inst.config_text)
    if rules and not inst.verify_exe:
        lines.append(
            "warning: caller rules " + ", ".join(map(repr, rules)) + " check the executable "
            "(exe/sha256): across uids they cannot match without --verify-exe. Use uids and "
            "argv, or reinstall with --verify-exe (docs/OPERATIONS.md)."
        )
    lines.append(
        f"{inst.person} can connect once in group {CLIENTS_GROUP}: from their next login "
        f"(or `newgrp {CLIENTS_GROUP}`). Clients use {layout.socket}."
    )
    return "\n".join(lines)

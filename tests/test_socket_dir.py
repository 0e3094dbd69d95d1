"""Issue 16.9: the socket directory is created when missing and never chmodded when present.

Same-uid mode wants 0700; separated mode (``[daemon] socket_group``) the group-traversable
layout: directory 0750 or 0710 of that group, socket 0660 of that group. These call
``aegisd.daemon.server`` directly (root may chown to any gid, so no group has to exist).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aegisd.daemon.server import Access, access_for, check_socket_mode, prepare_directory
from aegisd.errors import ConfigError

GID = 54329  # any gid: root may chown to it
GROUP = Access(os.getuid(), GID, "aegis-clients")


def mode_of(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_missing_directory_is_created_private(tmp_path: Path) -> None:
    prepare_directory(tmp_path / "a" / "run")
    assert mode_of(tmp_path / "a" / "run")[0] == 0o700


def test_missing_directory_is_created_for_the_group(tmp_path: Path) -> None:
    prepare_directory(tmp_path / "run", GROUP)
    assert mode_of(tmp_path / "run") == (0o750, GID)


@pytest.mark.parametrize("mode", [0o750, 0o710])
def test_group_layout_is_accepted_unchanged(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "run"
    d.mkdir()
    os.chown(d, -1, GID)
    d.chmod(mode)
    prepare_directory(d, GROUP)
    assert mode_of(d) == (mode, GID)


@pytest.mark.parametrize(
    ("mode", "gid", "expect"),
    [
        (0o750, 0, "must be 750 or 710 group aegis-clients"),  # wrong group
        (0o700, GID, "must be 750 or 710"),  # clients could not reach the socket
        (0o755, GID, "must be 750 or 710"),  # world-readable
        (0o770, GID, "group- or world-writable"),
    ],
)
def test_wrong_group_layout_is_refused_and_left_alone(
    tmp_path: Path, mode: int, gid: int, expect: str
) -> None:
    d = tmp_path / "run"
    d.mkdir()
    os.chown(d, -1, gid)
    d.chmod(mode)
    with pytest.raises(ConfigError, match=expect) as info:
        prepare_directory(d, GROUP)
    assert "chmod 750" in info.value.message
    assert mode_of(d) == (mode, gid)


def test_the_working_directory_is_never_chmodded(tmp_path: Path) -> None:
    # socket = "rel.sock" makes the cwd the socket directory
    tmp_path.chmod(0o755)
    with pytest.raises(ConfigError, match="must be 700"):
        prepare_directory(tmp_path)
    assert mode_of(tmp_path)[0] == 0o755


def test_socket_modes(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        os.chown(path, -1, GID)
        path.chmod(0o660)
        check_socket_mode(path, GROUP)
        with pytest.raises(ConfigError, match="must be 600"):
            check_socket_mode(path)  # same-uid mode: 0660 is too open
        path.chmod(0o666)
        with pytest.raises(ConfigError, match="SocketGroup=aegis-clients"):
            check_socket_mode(path, GROUP)


def test_unknown_socket_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no group named"):
        access_for("aegis-no-such-group-xyz")


def test_an_activated_sockets_directory_is_the_service_managers(tmp_path: Path) -> None:
    # systemd's RuntimeDirectory= or DirectoryMode= decide its group and mode; it only has to
    # be ours or root's and writable by nobody else
    d = tmp_path / "run"
    d.mkdir(mode=0o755)
    prepare_directory(d, GROUP, activated=True)
    d.chmod(0o775)
    with pytest.raises(ConfigError, match="group- or world-writable"):
        prepare_directory(d, GROUP, activated=True)

"""``trusted_file.read_trusted``: the rules on one file and the directories above it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aegisd.errors import ConfigError, UnsafeFile
from aegisd.trusted_file import read_trusted

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown (CI runs as root)")


def test_a_private_file_is_read(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"x = 1\n")
    f.chmod(0o644)
    assert read_trusted(f) == b"x = 1\n"


def test_a_sticky_world_writable_directory_is_accepted_for_our_entry(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot rename or remove our file
    f = sticky / "c.toml"
    f.write_bytes(b"")
    assert read_trusted(f) == b""
    sticky.chmod(0o777)
    with pytest.raises(UnsafeFile, match=r"writable by others \(mode 0777\)"):
        read_trusted(f)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    os.mkfifo(f, 0o600)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_trusted(f)


def test_missing_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_trusted(tmp_path / "none.toml")


def test_a_runaway_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"#" * 2048)
    with pytest.raises(ConfigError, match="larger than 1024 bytes"):
        read_trusted(f, max_bytes=1024)


@needs_root
def test_the_daemon_account_and_root_may_own_it(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"")
    os.chown(f, 54321, 54321)
    with pytest.raises(UnsafeFile, match="owned by uid 54321"):
        read_trusted(f)
    assert read_trusted(f, owners={54321, 0}) == b""  # a daemon running as uid 54321
    os.chown(f, 0, 54321)
    f.chmod(0o640)  # separated mode's root:aegis 0640
    assert read_trusted(f, owners={54321, 0}) == b""


@needs_root
def test_a_directory_of_another_account_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    f = home / "c.toml"
    f.write_bytes(b"")
    os.chown(home, 54321, -1)
    with pytest.raises(UnsafeFile, match=f"{home}: a directory above the config .* uid 54321"):
        read_trusted(f)

"""Where the active policy lives: ``[daemon] policy_file``, else the config's own tables.

Owns reading and atomically writing the policy file (temporary file, fsync, rename, fsync of
the directory), and the rule that decides between it and the config (decided for separated
mode, DESIGN §4): the policy file records the SHA-256 of the config tables it was derived
from (``base-sha256``). When the config's tables still hash to that base, the policy file is
the active policy (an approved ``policy propose`` changed it). When they differ, root has
edited the config since, so the config wins and the file is rewritten from it (the caller
audits ``policy_from_config``). A policy file that is unsafe (``trusted_file``: a symlink,
not ours, writable by others, in a directory others can change), unreadable or invalid also
yields the config's tables. Blocking I/O: run in a worker thread.
It must not decide whether a proposal may be applied (``proposal.py`` does).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from aegisd.config import Config
from aegisd.errors import ConfigError
from aegisd.policy import Policy, compile_policy
from aegisd.policy_text import parse_policy, policy_sha256, render_policy
from aegisd.trusted_file import read_trusted

__all__ = ["Active", "base_sha256", "load_active", "write_policy_file"]

_BASE_RE: Final = re.compile(r"^# base-sha256: ([0-9a-f]{64})$", re.MULTILINE)
_HEADER: Final = (
    "# aegisd's active policy, written by aegisd. Do not edit: propose a change with\n"
    "# `aegisctl policy propose FILE` (approved on the phone), or edit the config as root\n"
    "# and run `sudo aegisctl reload` (the config then wins over this file).\n"
)


@dataclass(frozen=True)
class Active:
    """The effective config (root's config with the active tables) and its compiled policy."""

    config: Config
    policy: Policy
    source: str  # "config" or the policy file's path
    sha256: str  # of the active policy (policy_text.policy_sha256)
    base_sha256: str  # of the config's own tables
    rewritten: str | None = None  # why the file was rewritten from the config, if it was


def base_sha256(cfg: Config) -> str:
    return policy_sha256(cfg.callers, cfg.actions)


def write_policy_file(path: str | os.PathLike[str], cfg: Config, base: str) -> str:
    """Write ``cfg``'s tables to ``path`` atomically (0600); returns the policy's SHA-256."""
    path = Path(path).expanduser()
    body = render_policy(cfg.callers, cfg.actions)
    sha = policy_sha256(cfg.callers, cfg.actions)
    text = f"{_HEADER}# base-sha256: {base}\n# policy-sha256: {sha}\n\n{body}"
    fd, tmp = tempfile.mkstemp(prefix=".policy-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)
    return sha


def _from_config(cfg: Config, policy: Policy, source: str, rewritten: str | None) -> Active:
    base = base_sha256(cfg)
    return Active(cfg, policy, source, base, base, rewritten)


def load_active(cfg: Config) -> Active:
    """The active policy for root's ``cfg`` (whose policy must already compile).

    Raises ``ConfigError`` only when the config itself does not compile.
    """
    policy = compile_policy(cfg)
    if not cfg.daemon.policy_file:
        return _from_config(cfg, policy, "config", None)
    path = Path(cfg.daemon.policy_file).expanduser()
    base = base_sha256(cfg)
    reason: str | None = None
    try:
        # written by aegisd alone: owned by its uid (not even root), O_NOFOLLOW, fstat
        data = read_trusted(path, owners={os.geteuid()}, what="policy file", max_bytes=1 << 20)
    except FileNotFoundError:
        return _from_config(cfg, policy, "config", None)
    except OSError as exc:
        reason = f"cannot read {path} ({exc.strerror})"
    except ConfigError as exc:  # UnsafeFile: the config's own tables, never the file's
        reason = exc.message
    else:
        text = data.decode("utf-8", "replace")
        if (m := _BASE_RE.search(text)) is None or m.group(1) != base:
            reason = "the config's policy changed since the policy file was written"
        else:
            try:
                eff = parse_policy(text, cfg, str(path))
                eff_policy = compile_policy(eff)
            except ConfigError as exc:
                reason = f"{path} is invalid ({'; '.join(exc.problems)[:300]})"
            else:
                eff = msgspec.structs.replace(eff, source=cfg.source)
                sha = policy_sha256(eff.callers, eff.actions)
                return Active(eff, eff_policy, cfg.daemon.policy_file, sha, base)
    try:
        write_policy_file(path, cfg, base)
    except OSError as exc:
        reason += f" (and it could not be rewritten: {exc.strerror})"
    return _from_config(cfg, policy, cfg.daemon.policy_file, reason)

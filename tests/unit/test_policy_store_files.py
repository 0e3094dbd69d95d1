"""``policy_store.load_active``: a policy file others could have changed gives way to the config."""

from __future__ import annotations

from pathlib import Path

from aegisd.config import Config, parse_config
from aegisd.daemon.policy_store import load_active, write_policy_file

ACTION = (
    '[actions."demo.read"]\napproval = "none"\n'
    '[actions."demo.read".request]\nurl = "http://127.0.0.1:9/x"\n'
)


def config(tmp_path: Path, policy_file: Path) -> Config:
    return parse_config(f'[daemon]\npolicy_file = "{policy_file}"\n\n{ACTION}', "aegisd.toml")


def test_a_symlinked_policy_file_is_not_followed(tmp_path: Path) -> None:
    real, link = tmp_path / "real.toml", tmp_path / "policy.toml"
    cfg = config(tmp_path, link)
    write_policy_file(real, cfg, "0" * 64)
    link.symlink_to(real)
    active = load_active(cfg)
    assert active.rewritten is not None and "the policy file is a symlink" in active.rewritten
    assert active.policy.actions.keys() == {"demo.read"}  # the config's own tables
    assert not link.is_symlink()  # rewritten in place of the link, the target untouched


def test_a_group_writable_policy_file_gives_way_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    cfg = config(tmp_path, path)
    write_policy_file(path, cfg, "0" * 64)
    path.chmod(0o660)
    active = load_active(cfg)
    assert active.rewritten is not None and "group-writable (mode 0660)" in active.rewritten
    assert path.stat().st_mode & 0o777 == 0o600  # rewritten by the daemon, private again

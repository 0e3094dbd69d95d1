"""``aegisctl reload``, ``policy show`` and ``policy propose`` against a real daemon process.

The approval paths of ``propose`` (approve, deny, expiry) run against the dev tenant in
tests/broker/test_proposal.py; here: the command line, its exit codes and the round trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec
from aegisctl.outputs import ProposeOutput, ReloadOutput

from tests.corekit import DaemonProcess, Files, audit_records, run_ctl, status_roundtrip

Spawn = Callable[..., DaemonProcess]
WriteConfig = Callable[..., Files]


def test_reload_over_the_socket(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    spawn_daemon(files)
    before = status_roundtrip(files.socket).policy_generation
    done = run_ctl(files, "reload")
    assert done.returncode == 0, done.stderr
    assert "reloaded (generation" in done.stdout
    assert status_roundtrip(files.socket).policy_generation == before + 1
    reloaded = [r for r in audit_records(files.audit) if r["event"] == "reloaded"]
    assert reloaded and reloaded[-1]["uid"] == os.getuid()  # who asked is on record


def test_reload_of_an_invalid_config_keeps_the_policy_and_exits_78(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    spawn_daemon(files)
    files.config.write_text(files.config.read_text() + '\n[actions."bad"]\napprovl = "x"\n')
    done = run_ctl(files, "reload")
    assert done.returncode == 78, done.stdout
    assert "approvl" in done.stderr and "keeps its current policy" in done.stderr
    assert status_roundtrip(files.socket).actions == 1


def test_reload_json_follows_its_documented_schema(
    write_config: WriteConfig, spawn_daemon: Spawn
) -> None:
    files = write_config()
    spawn_daemon(files)
    done = run_ctl(files, "reload", "--json")
    assert done.returncode == 0, done.stderr
    good = msgspec.json.decode(done.stdout, type=ReloadOutput)
    assert good.ok and good.problems == []
    assert good.policy_sha256 == status_roundtrip(files.socket).policy_sha256
    files.config.write_text(files.config.read_text() + '\n[actions."bad"]\napprovl = "x"\n')
    done = run_ctl(files, "--json", "reload")
    assert done.returncode == 78
    bad = msgspec.json.decode(done.stdout, type=ReloadOutput)
    assert not bad.ok and bad.generation == good.generation
    assert any("approvl" in p for p in bad.problems)


def test_policy_show_round_trips_through_propose(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    files = write_config(policy_file=str(aeg_root / "policy.toml"))
    spawn_daemon(files)
    shown = run_ctl(files, "policy", "show")
    assert shown.returncode == 0, shown.stderr
    sha = status_roundtrip(files.socket).policy_sha256
    assert shown.stdout.startswith(f"# aegisd active policy, sha256 {sha}\n")
    assert "[[callers]]" in shown.stdout and '[actions."demo.read"]' in shown.stdout
    assert "[daemon]" not in shown.stdout
    proposal = aeg_root / "proposal.toml"
    proposal.write_text(shown.stdout)
    done = run_ctl(files, "policy", "propose", str(proposal))
    assert done.returncode == 0, done.stderr
    assert f"no change: the active policy already is this one ({sha[:12]})" in done.stdout
    done = run_ctl(files, "policy", "propose", str(proposal), "--json")
    assert done.returncode == 0, done.stderr
    same = msgspec.json.decode(done.stdout, type=ProposeOutput)
    assert same.ok and not same.applied and same.sha256 == sha


def test_propose_refuses_daemon_settings_with_78(
    write_config: WriteConfig, spawn_daemon: Spawn, aeg_root: Path
) -> None:
    files = write_config(policy_file=str(aeg_root / "policy.toml"))
    spawn_daemon(files)
    proposal = aeg_root / "proposal.toml"
    proposal.write_text(
        "[daemon]\nallowed_uids = [1234]\n\n" + run_ctl(files, "policy", "show").stdout
    )
    done = run_ctl(files, "policy", "propose", str(proposal))
    assert done.returncode == 78
    assert "key daemon: a policy carries only [[callers]] and [actions]" in done.stderr
    done = run_ctl(files, "policy", "propose", str(proposal), "--json")
    assert done.returncode == 78
    refused = msgspec.json.decode(done.stdout, type=ProposeOutput)
    assert not refused.ok and not refused.applied
    assert any("a policy carries only" in p for p in refused.problems)


def test_propose_refuses_a_text_over_one_frame_before_connecting(aeg_root: Path) -> None:
    big = aeg_root / "big.toml"
    big.write_text("# " + "x" * 70_000 + "\n")
    done = run_ctl(None, "policy", "propose", str(big), socket_path=aeg_root / "none.sock")
    assert done.returncode == 2
    assert "a proposal must fit one 64 KiB frame" in done.stderr


def test_status_names_the_mode(write_config: WriteConfig, spawn_daemon: Spawn) -> None:
    files = write_config()
    spawn_daemon(files)
    done = run_ctl(files, "status")
    assert done.returncode == 0, done.stderr
    assert (
        "mode     same-uid (aegisd runs as root, uid 0; not dumpable (PR_SET_DUMPABLE 0))"
        in done.stdout
    )

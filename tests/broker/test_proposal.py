"""``policy propose`` end to end: the dev tenant's phone approves, denies or lets it expire.

The daemon runs with ``[daemon] policy_file`` (as separated mode configures it). A proposal
must change the active policy only after approval, atomically, and be audited with its hash;
a denial or an expiry leaves everything as it was. ``policy show`` round-trips through
``propose`` (nothing to approve). Reload keeps the approved policy until root edits the
config's own tables, then the config wins and the policy file is rewritten from it.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from aegisd.client import AegisClient, ApprovalDenied, ApprovalExpired, PendingEvent, PolicyDenied
from aegisd.devtenant import DevTenantOptions

from .conftest import Stack, wait_for_pending

T = 20


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aegp", dir="/tmp"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def with_policy_file(state_dir: Path, expiry: int | None = None):
    def edit(text: str) -> str:
        text = text.replace("[daemon]\n", f'[daemon]\npolicy_file = "{state_dir}/policy.toml"\n', 1)
        if expiry is not None:
            text = text.replace("requested_expiry = 120", f"requested_expiry = {expiry}")
        return text

    return edit


def weaker_policy(shown: str) -> str:
    """The issue's attack (demo.delete's phone text made harmless) plus one added action."""
    assert 'binding_message = "Delete repo {repo}"' in shown
    text = shown.replace("Delete repo {repo}", "List your repos {repo}")
    return text + '\n[actions."demo.extra"]\napproval = "deny"\ndelivery = "proxy"\n'


PUSHED: list[str] = []  # binding messages the phone showed, newest last


async def propose_and_answer(stack: Stack, text: str, answer: str | None) -> object:
    events: list[PendingEvent] = []
    outcome: list[object] = []
    async with AegisClient(stack.socket) as c:
        async with trio.open_nursery() as n:

            async def run() -> None:
                try:
                    outcome.append(await c.propose_policy(text, on_pending=events.append))
                except Exception as exc:
                    outcome.append(exc)

            n.start_soon(run)
            while not outcome and not (events and stack.tenant.pending()):
                await trio.sleep(0.02)
            assert not outcome, outcome  # it must wait for the phone
            ids = await wait_for_pending(stack.tenant)
            push = stack.tenant.pending()[0]
            assert events and events[0].binding_message == push.binding_message
            PUSHED.append(push.binding_message)
            if answer == "approve":
                stack.tenant.approve(ids[0])
            elif answer == "deny":
                stack.tenant.deny(ids[0])
    return outcome[0]


async def current(stack: Stack) -> tuple[str, str]:
    async with AegisClient(stack.socket) as c:
        shown = await c.show_policy()
    return shown.text, shown.sha256


async def test_applied_after_approval_atomically_and_audited(make_stack, state_dir: Path) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, old_sha = await current(stack)
        result = await propose_and_answer(stack, weaker_policy(shown), "approve")
        assert getattr(result, "applied", False), result
        assert result.summary == "1 added, 1 weaker"  # type: ignore[attr-defined]
        assert "demo.extra" in stack.daemon.policy.actions
        assert stack.daemon.policy.actions["demo.delete"].spec.binding_message.startswith("List")
        new_text, new_sha = await current(stack)
        assert new_sha == result.sha256 != old_sha  # type: ignore[attr-defined]
        assert f"sha256 {new_sha}" in new_text
        # the file the daemon keeps it in: ours, 0600, naming its base and hash
        policy_file = state_dir / "policy.toml"
        assert stat.S_IMODE(os.stat(policy_file).st_mode) == 0o600
        assert f"# policy-sha256: {new_sha}" in policy_file.read_text()
        assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
        proposed = stack.audit_records("policy_proposed")[0]
        applied = stack.audit_records("policy_applied")[0]
        assert proposed["policy_sha256"] == applied["policy_sha256"] == new_sha
        assert proposed["previous_sha256"] == old_sha
        assert re.fullmatch(r"[0-9a-f]{64}", str(applied["text_sha256"]))
        assert (
            "weaker: action demo.delete: binding message 'Delete repo {repo}' -> "
            "'List your repos {repo}'" in proposed["changes"]  # type: ignore[operator]
        )
        # reload keeps the approved policy: root's config did not change
        assert await stack.daemon.reload()
        assert (await current(stack))[1] == new_sha
        assert stack.daemon.keeper.active.source == str(policy_file)


async def test_binding_message_names_the_summary_and_the_new_hash(
    make_stack, state_dir: Path
) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, _ = await current(stack)
        result = await propose_and_answer(stack, weaker_policy(shown), "approve")
        sha = result.sha256  # type: ignore[attr-defined]
        # what the phone showed: the summary and the first hex of the new policy's hash
        assert PUSHED[-1] == f"Policy: 1 added, 1 weaker #{sha[:6]}"
        assert stack.audit_records("policy_pending")[0]["policy_sha256"] == sha


async def test_not_applied_after_denial(make_stack, state_dir: Path) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, old_sha = await current(stack)
        result = await propose_and_answer(stack, weaker_policy(shown), "deny")
        assert isinstance(result, ApprovalDenied)
        assert (await current(stack))[1] == old_sha
        assert "demo.extra" not in stack.daemon.policy.actions
        assert not (state_dir / "policy.toml").exists()
        rejected = stack.audit_records("policy_rejected")[0]
        assert rejected["code"] == "approval_denied"


async def test_not_applied_after_expiry(make_stack, state_dir: Path) -> None:
    stack: Stack = await make_stack(
        DevTenantOptions(interval=0.2), edit=with_policy_file(state_dir, expiry=2)
    )
    with trio.fail_after(T):
        shown, old_sha = await current(stack)
        result = await propose_and_answer(stack, weaker_policy(shown), None)
        assert isinstance(result, ApprovalExpired)
        assert (await current(stack))[1] == old_sha
        assert not (state_dir / "policy.toml").exists()
        assert stack.audit_records("policy_rejected")[0]["code"] == "approval_expired"


async def test_show_round_trips_through_propose_without_a_push(make_stack, state_dir: Path) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, sha = await current(stack)
        async with AegisClient(stack.socket) as c:
            result = await c.propose_policy(shown)
        assert not result.applied and result.summary == "no change" and result.sha256 == sha
        assert not result.problems
        assert stack.tenant.pending() == []


async def test_a_proposal_may_not_carry_daemon_auth0_or_secrets(
    make_stack, state_dir: Path
) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, sha = await current(stack)
        evil = '[secrets]\nbackend = "env"\n\n[auth0]\nclient_id = "x"\nuser_id = "me"\n\n' + shown
        async with AegisClient(stack.socket) as c:
            result = await c.propose_policy(evil)
        assert not result.applied
        assert any("key auth0: a policy carries only" in p for p in result.problems)
        assert any("key secrets" in p for p in result.problems)
        assert (await current(stack))[1] == sha


async def test_root_editing_the_config_wins_over_the_policy_file(
    make_stack, state_dir: Path
) -> None:
    stack: Stack = await make_stack(edit=with_policy_file(state_dir))
    with trio.fail_after(T):
        shown, _ = await current(stack)
        result = await propose_and_answer(stack, weaker_policy(shown), "approve")
        assert getattr(result, "applied", False)
        # root edits the config's own tables: the config wins, the file follows it
        config = stack.directory / "aegisd.toml"
        config.write_text(config.read_text().replace("Delete repo {repo}", "Remove repo {repo}"))
        assert await stack.daemon.reload()
        assert "demo.extra" not in stack.daemon.policy.actions
        assert stack.daemon.policy.actions["demo.delete"].spec.binding_message.startswith("Rem")
        assert stack.audit_records("policy_from_config")
        assert "Remove repo {repo}" in (state_dir / "policy.toml").read_text()


async def test_without_a_policy_file_a_proposal_is_refused(make_stack) -> None:
    stack: Stack = await make_stack()
    with trio.fail_after(T):
        shown, _ = await current(stack)
        async with AegisClient(stack.socket) as c:
            with pytest.raises(PolicyDenied, match="policy_file"):
                await c.propose_policy(weaker_policy(shown))

"""What the person sees on the phone with RAR on: the caller's program and pid, each parameter
(the daemon's ``_launch`` calls ``aegisd.auth0.rar.guardian_details``), and the refresh-token
revocation the broker audits."""

from __future__ import annotations

import os
import sys

import pytest
import trio

from aegisd.client import AegisClient
from aegisd.devtenant import DevTenantOptions

from .conftest import Stack, wait_for_pending

pytestmark = pytest.mark.usefixtures("make_stack")


def _with_auth0_keys(*lines: str) -> object:
    def edit(text: str) -> str:
        return text.replace("[auth0]\n", "[auth0]\n" + "".join(f"{x}\n" for x in lines), 1)

    return edit


async def test_the_push_names_the_caller_program_pid_and_parameters(make_stack) -> None:
    stack: Stack = await make_stack(edit=_with_auth0_keys("authorization_details = true"))
    with trio.fail_after(20):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:

            async def phone() -> None:
                (rid,) = await wait_for_pending(stack.tenant)
                shown.extend(stack.tenant.pending())
                stack.tenant.approve(rid)

            shown: list[object] = []
            n.start_soon(phone)
            result = await c.proxy("demo.delete", repo="scratch")
    assert result.status == 200
    (pending,) = shown
    details = pending.authorization_details  # type: ignore[attr-defined]
    assert len(details) == 1
    props = {p["name"]: p["value"] for p in details[0]["properties"]}
    assert props["action"] == "demo.delete"
    assert props["caller"] == "local-python"
    assert props["program"] == os.path.basename(os.path.realpath(sys.executable))
    assert props["pid"] == str(os.getpid())
    assert props["param.repo"] == "scratch"
    assert details[0]["instruction"] == pending.binding_message  # type: ignore[attr-defined]


async def test_the_refresh_token_revocation_is_audited(make_stack) -> None:
    stack: Stack = await make_stack(
        DevTenantOptions(interval=0.2), edit=_with_auth0_keys("offline_access = true")
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as n, AegisClient(stack.socket) as c:

            async def phone() -> None:
                (rid,) = await wait_for_pending(stack.tenant)
                stack.tenant.approve(rid)

            n.start_soon(phone)
            result = await c.proxy("demo.delete", repo="scratch")
    assert result.status == 200
    (cred,) = stack.audit_records("credential")
    assert cred["revocation"] == "revoked"
    assert stack.tenant.stats.revocations == 1

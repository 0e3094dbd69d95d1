"""``aegisctl pending``, ``cancel ID`` and ``lock``: the operator's hand on pending approvals.

The daemon shows every caller's pending approvals only to an operator (a caller rule with
``operator = true`` matching aegisctl, root, or the daemon's account in separated mode); any
other process sees only its own, and one that matches no caller rule sees none
(aegisd/daemon/inspection.py). ``pending`` says so whenever its list is limited.
"""

from __future__ import annotations

import json
import time

import click
import msgspec

from aegisctl.context import CliContext, pass_cli
from aegisctl.output import emit, json_option
from aegisctl.outputs import CancelOutput, LockOutput, PendingItem, PendingOutput
from aegisctl.talk import call


@click.command()
@json_option
@pass_cli
def pending(cli: CliContext, as_json: bool) -> None:
    """List approvals waiting on the phone (every caller's only for an operator rule)."""
    listing = call(cli.socket(), lambda c: c.list_pending())
    items = listing.pending
    if as_json:
        emit(
            PendingOutput(
                pending=msgspec.convert(msgspec.to_builtins(items), list[PendingItem]),
                scope=listing.scope,
                note=listing.note,
            )
        )
        return
    if listing.scope != "all":
        # on stderr: stdout stays the list itself, and nobody mistakes it for everything
        click.echo(f"note: {listing.note or 'this list is limited'}", err=True)
    if not items:
        click.echo("no approvals pending" if listing.scope == "all" else "none of yours pending")
        return
    now = time.time()
    for p in items:
        left = max(0, int(p.expires_at - now))
        # an answered push held for its requester says so: approving it again does nothing
        state = "" if p.state == "pending" else f"{p.state}, not yet collected  "
        click.echo(
            f"{p.pending_id}  {p.action:<24} caller={p.caller} waiters={p.waiters} "
            f'{state}{left}s left  "{p.binding_message}"'
        )
        # The phone text may shorten long values in the middle; here they are whole, next to
        # the digest whose first six digits end the phone text. Values come from the agent:
        # JSON quoting shows control characters and look-alike letters as escapes instead of
        # letting them act on the terminal.
        width = max((len(k) for k in p.params), default=0)
        for key, value in sorted(p.params.items()):
            click.echo(f"    {key:<{width}} = {json.dumps(value)}")
        click.echo(f"    digest {p.digest}")


@click.command()
@click.argument("pending_id")
@json_option
@pass_cli
def cancel(cli: CliContext, pending_id: str, as_json: bool) -> None:
    """Withdraw one pending approval (its callers get `cancelled`); exit 17 if there is none.

    Any caller's for an operator rule; otherwise only this process's own (exit 17 for others,
    exit 4 when no caller rule matches aegisctl). `lock` is open to everyone.
    """
    call(cli.socket(), lambda c: c.cancel_pending(pending_id))
    if as_json:
        emit(CancelOutput(cancelled=pending_id))
        return
    click.echo(f"cancelled {pending_id}")


@click.command()
@json_option
@pass_cli
def lock(cli: CliContext, as_json: bool) -> None:
    """Cancel every pending approval and forget every remembered approval."""
    result = call(cli.socket(), lambda c: c.lock())
    if as_json:
        emit(LockOutput(cancelled=result.cancelled, forgotten=result.forgotten))
        return
    click.echo(
        f"locked: {result.cancelled} pending approval(s) cancelled, "
        f"{result.forgotten} remembered approval(s) forgotten"
    )

"""Which mode aegisd runs in, and who counts as its operator.

Owns the two small decisions that depend on the daemon's account: ``running_mode``
(``separated`` when aegisd runs as the daemon account, ``aegis``/``_aegis``, see
``aegisd.accounts.daemon_account``; ``same-uid`` otherwise), ``operator_refusal`` (operator
requests such as ``Reload`` come from the daemon's own uid or root) and ``sees_everything``
(who may list and cancel every caller's pending approvals: a caller rule with ``operator =
true``, or an account the agent cannot be: root, and the daemon's own account in separated
mode). No I/O beyond passwd.
"""

from __future__ import annotations

import os
import pwd

from aegisd.accounts import daemon_uid
from aegisd.config import CallerRule
from aegisd.daemon.peer import PeerIdentity

__all__ = ["operator_refusal", "running_mode", "sees_everything", "user_name"]


def running_mode() -> str:
    """``separated`` when aegisd runs as the daemon account (not root), else ``same-uid``."""
    uid = os.getuid()
    return "separated" if uid != 0 and uid == daemon_uid() else "same-uid"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def operator_refusal(peer: PeerIdentity) -> str | None:
    """None when ``peer`` may send operator requests (the daemon's uid or root), else why not."""
    if peer.uid in (os.getuid(), 0):
        return None
    return (
        "reload is for the operator (aegisd's own account or root): run "
        "`sudo systemctl reload aegisd` or `sudo aegisctl reload`"
    )


def sees_everything(peer: PeerIdentity, rule: CallerRule | None, mode: str) -> bool:
    """May ``peer`` list and cancel every caller's pending approvals (issue 13 finding 5)?

    Yes for a peer whose caller rule says ``operator = true`` (``aegisctl``'s rule), and for
    accounts the agent cannot be: root (when ``allowed_uids`` admits it) and, in separated
    mode, the daemon's own account. The daemon's uid alone is not enough in same-uid mode:
    there every process of the person's, the agent included, has it.
    """
    if rule is not None and rule.operator:
        return True
    own = os.getuid()
    if peer.uid == 0 and own != 0:
        return True
    return mode == "separated" and peer.uid == own

"""Which mode aegisd runs in, and who counts as its operator.

Owns the two small decisions that depend on the daemon's account: ``running_mode``
(``separated`` when aegisd runs as the daemon account, ``aegis``/``_aegis``, see
``aegisd.accounts.daemon_account``; ``same-uid`` otherwise) and ``operator_refusal`` (operator
requests such as ``Reload`` come from the daemon's own uid or root). Kept in one place so an
"operator" notion in caller rules can replace the uid rule later. No I/O beyond passwd.
"""

from __future__ import annotations

import os
import pwd

from aegisd.accounts import daemon_uid
from aegisd.peer import PeerIdentity

__all__ = ["operator_refusal", "running_mode", "user_name"]


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

"""The Rich Authorization Request that Guardian can show: who asks, for what, exactly.

Owns one pure function, ``guardian_details``, that builds ``authorization_details`` in the
only shape the Guardian app renders (``reference/auth0-protocol.md`` §11, from Auth0's
"Configure Rich Authorization Requests"): exactly one object with ``type``, ``instruction``
and ``properties``; each property ``{"display", "name", "display_order", "value"}``; at most
10 properties; names of ``[a-zA-Z0-9_.-]``; values of at most 255 characters. The type must
be registered on the API named by ``auth0.audience`` (config validation refuses
``authorization_details = true`` without an audience).

The person reads on the phone: the action, the caller rule, the calling executable's base
name and pid, and each parameter. A push carries nothing else that names the caller.

It must not perform I/O, read a clock, or include anything that is not already part of the
request (no tokens, no full paths: the base name is enough to recognise a program, and the
full path can hold the person's user name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

__all__ = ["GUARDIAN_TYPE", "MAX_PROPERTIES", "MAX_VALUE", "guardian_details"]

GUARDIAN_TYPE: Final = "urn:auth0:schemas:authorization-details:v1:aegis"
MAX_PROPERTIES: Final = 10
MAX_VALUE: Final = 255
_FIXED: Final = 4  # action, caller, program, pid


def _value(text: str) -> str:
    # Values are shown, not parsed: cut long ones visibly rather than be refused.
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def guardian_details(
    *,
    action: str,
    binding_message: str,
    caller: str,
    exe: str,
    pid: int,
    params: Mapping[str, str],
) -> list[dict[str, object]]:
    """``authorization_details`` for one approval, in Guardian's renderable shape.

    Args:
        action: the action name (``[a-zA-Z0-9_.-]``, policy-checked).
        binding_message: the rendered binding message; becomes ``instruction``.
        caller: the caller rule's name.
        exe: the peer's resolved executable path (only its base name is sent), or ``""``.
        pid: the peer's process id.
        params: the checked parameters; each becomes a ``param.<name>`` property, in name
            order. Beyond the 10-property limit the rest are summarised in one property.

    Returns:
        A list holding exactly one object.
    """
    rows: list[tuple[str, str]] = [
        ("action", action),
        ("caller", caller),
        ("program", os.path.basename(exe) or "unknown"),
        ("pid", str(pid)),
    ]
    names = sorted(params)
    room = MAX_PROPERTIES - _FIXED
    if len(names) > room:
        shown, hidden = names[: room - 1], names[room - 1 :]
        rows += [(f"param.{n}", params[n]) for n in shown]
        rows.append(("params.omitted", _value(", ".join(hidden))))
    else:
        rows += [(f"param.{n}", params[n]) for n in names]
    return [
        {
            "type": GUARDIAN_TYPE,
            "instruction": _value(binding_message),
            "properties": [
                {"display": True, "name": name, "display_order": order, "value": _value(value)}
                for order, (name, value) in enumerate(rows, start=1)
            ],
        }
    ]

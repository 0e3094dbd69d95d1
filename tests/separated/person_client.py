"""Run as the throwaway person: the SDK against the system socket, one result per action.

``python person_client.py SOCKET`` prints ``{"read": {...}, "delete": {...}, "token": {...}}``:
``{"ok": true, "status": HTTP status or null}`` or ``{"ok": false, "code": error code}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from aegisd.client import BlockingAegisClient
from aegisd.errors import AegisError


def main(socket: str) -> None:
    client = BlockingAegisClient(socket)
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: client.proxy("demo.read"),
        "delete": lambda: client.proxy("demo.delete", repo="scratch"),
        "token": lambda: client.authorize("demo.token"),
    }
    out: dict[str, dict[str, object]] = {}
    for name, call in calls.items():
        try:
            result = call()
        except AegisError as exc:
            out[name] = {"ok": False, "code": exc.code}
        else:
            out[name] = {"ok": True, "status": getattr(result, "status", None)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])

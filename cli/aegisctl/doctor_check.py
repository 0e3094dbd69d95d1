"""One line of ``aegisctl doctor``: what was checked, the verdict, and a fix that works.

Owns the record every doctor check returns. Types only: no checks, no I/O, no formatting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Check", "Verdict"]

Verdict = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

"""How a benchmark reports: percentiles, machine facts, and the one JSON line ``run_all`` reads.

Every bench script prints human-readable lines and, last, exactly one line::

    BENCH_JSON {"bench": "...", "metrics": [{"name": ..., "value": ..., "unit": ...,
                "target": "...", "met": true|false|null, "note": "..."}], ...}

``met`` is ``null`` for figures that have no target (baselines, context). Nothing here runs a
benchmark.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "BENCH_JSON "


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on the sorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "kernel": platform.release(),
    }


@dataclass
class Metric:
    name: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Result:
    bench: str
    metrics: list[Metric] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float | int | str | None,
        unit: str = "",
        *,
        target: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> Metric:
        m = Metric(name, value, unit, target, met, note)
        self.metrics.append(m)
        return m

    def emit(self) -> None:
        """Print the table for people, then the JSON line for ``run_all``."""
        width = max((len(m.name) for m in self.metrics), default=10)
        for m in self.metrics:
            verdict = "" if m.met is None else ("  [met]" if m.met else "  [MISSED]")
            value = _fmt(m.value)
            target = f"  (target {m.target})" if m.target else ""
            print(f"  {m.name:<{width}}  {value} {m.unit}{target}{verdict}")
            if m.note:
                print(f"  {'':<{width}}  {m.note}")
        payload = {
            "bench": self.bench,
            "machine": machine(),
            "metrics": [asdict(m) for m in self.metrics],
            "extra": self.extra,
        }
        print(PREFIX + json.dumps(payload, default=str))
        sys.stdout.flush()


def _fmt(value: float | int | str | None) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)

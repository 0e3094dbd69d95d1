"""How long ``import aegisd.client`` takes (target: under 60 ms; DESIGN §6).

Runs fresh interpreters, interleaved so machine noise hits every variant alike, and reports
medians: the ``-X importtime`` cumulative time of ``aegisd.client`` itself (the target
figure), and the wall time of ``python -c "import aegisd.client"`` minus a bare
``python -c pass``. It also lists which heavy packages the import pulled in (it must pull in
none of httpx, mcp, pydantic, trio).

Usage: ``.venv/bin/python bench/import_client.py [--runs N]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Result

HEAVY = ("httpx", "httpx2", "mcp", "mcp_types", "pydantic", "trio", "click", "platformdirs")
TARGET_MS = 60.0


def importtime_us() -> int:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aegisd.client"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "aegisd.client":
            return int(parts[1])
    raise RuntimeError("aegisd.client not found in -X importtime output")


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def loaded_heavy() -> list[str]:
    code = "import sys, aegisd.client; print(' '.join({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    return [m for m in HEAVY if m in loaded]


def main() -> None:
    parser = argparse.ArgumentParser(description="Time `import aegisd.client`.")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    wall("import aegisd.client")  # warm the bytecode cache
    cumulative: list[int] = []
    bare: list[float] = []
    full: list[float] = []
    for _ in range(args.runs):
        cumulative.append(importtime_us())
        bare.append(wall("pass"))
        full.append(wall("import aegisd.client"))
    heavy = loaded_heavy()
    imp = statistics.median(cumulative) / 1000
    delta = (statistics.median(full) - statistics.median(bare)) * 1000

    print(f"import aegisd.client, {args.runs} fresh interpreters each:")
    result = Result("import_client", extra={"runs": args.runs})
    result.add(
        "importtime_cumulative_p50",
        round(imp, 1),
        "ms",
        target=f"< {TARGET_MS:g} ms",
        met=imp < TARGET_MS,
        note=f"min {min(cumulative) / 1000:.1f}, max {max(cumulative) / 1000:.1f} ms",
    )
    result.add("wall_over_bare_python_p50", round(delta, 1), "ms")
    result.add("heavy_imports", ", ".join(heavy) or "none", target="none", met=not heavy)
    result.emit()


if __name__ == "__main__":
    main()

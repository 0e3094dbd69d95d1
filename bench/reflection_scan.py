"""Cost of searching one proxied answer for the credential (``aegisd.daemon.reflection``).

Proxy answers that carry a credential are searched before they go back (issue 13 finding 1).
This times ``CredentialScan.for_credential`` plus ``find`` over a 56 KiB body (the largest a
policy allows) that does not contain the token, for a GitHub-sized token (40 characters) and
a JWT-sized one (800), with a plain body and with one full of JSON escapes and
percent-signs (which make the scan also look at the decoded text).

Run: ``.venv/bin/python bench/reflection_scan.py [--n 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from base64 import urlsafe_b64encode
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegisd.daemon.reflection import CredentialScan

BODY = 56 * 1024


def bodies() -> dict[str, bytes]:
    plain = json.dumps([{"id": i, "name": f"repo-{i}", "private": False} for i in range(2000)])
    escaped = json.dumps([{"url": f"https:\\/\\/h\\/r%20{i}\\u00e9"} for i in range(3000)])
    return {"plain JSON": plain.encode()[:BODY], "escapes and %": escaped.encode()[:BODY]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    tokens = {
        "40-char token": "ghu_" + urlsafe_b64encode(os.urandom(27)).decode()[:36],
        "800-char token": urlsafe_b64encode(os.urandom(600)).decode(),
    }
    for tname, token in tokens.items():
        for bname, body in bodies().items():
            assert CredentialScan.for_credential(token).find(body) is None
            samples: list[float] = []
            for _ in range(args.n):
                t0 = time.perf_counter()
                CredentialScan.for_credential(token).find(body)
                samples.append(time.perf_counter() - t0)
            samples.sort()
            p50 = samples[len(samples) // 2] * 1e6
            low = samples[0] * 1e6
            print(f"{tname:<15} {bname:<14} {len(body)} B  min {low:7.1f} µs  p50 {p50:7.1f} µs")


if __name__ == "__main__":
    main()

"""``aegisctl doctor``'s Auth0 checks: discovery, CIBA poll mode and the clock's skew.

Owns one GET of the tenant's discovery document (with the configured timeout, no proxies
from the environment) and what its answer and ``Date`` header say. It must not send
credentials or start a CIBA request: doctor only looks.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx

from aegisctl.doctor_check import Check, Verdict
from aegisd.config import Config
from aegisd.errors import ConfigError

__all__ = ["auth0_checks"]

_MAX_SKEW_WARN = 30.0
_MAX_SKEW_FAIL = 120.0


async def auth0_checks(cfg: Config, timeout: float) -> list[Check]:
    from aegisd.auth0.http import issuer_from_config

    assert cfg.auth0 is not None
    try:
        issuer = issuer_from_config(cfg.auth0)
    except ConfigError as exc:
        return [Check("auth0", "fail", exc.message, "fix [auth0] domain/issuer")]
    url = issuer + ".well-known/openid-configuration"
    checks: list[Check] = []
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            started = time.time()
            response = await http.get(url)
            local = (started + time.time()) / 2
    except httpx.HTTPError as exc:
        return [
            Check(
                "auth0-discovery",
                "fail",
                f"{url} unreachable ({type(exc).__name__})",
                "check the network and [auth0] domain/issuer",
            )
        ]
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if response.status_code != 200 or not isinstance(doc, dict):
        return [
            Check(
                "auth0-discovery",
                "fail",
                f"{url} answered {response.status_code} without a discovery document",
                "check [auth0] domain/issuer",
            )
        ]
    checks.append(Check("auth0-discovery", "ok", f"{url} reachable"))
    modes = doc.get("backchannel_token_delivery_modes_supported") or []
    if "poll" in modes and doc.get("backchannel_authentication_endpoint"):
        checks.append(Check("auth0-ciba", "ok", "CIBA poll mode advertised"))
    else:
        checks.append(
            Check(
                "auth0-ciba",
                "fail",
                "the tenant does not advertise CIBA poll mode",
                "enable CIBA for the tenant/app (Enterprise plan or add-on), see docs/AUTH0.md",
            )
        )
    date = response.headers.get("date")
    if date:
        try:
            skew = abs(parsedate_to_datetime(date).timestamp() - local)
        except (TypeError, ValueError):
            skew = None
        if skew is not None:
            verdict: Verdict = (
                "ok" if skew < _MAX_SKEW_WARN else "warn" if skew < _MAX_SKEW_FAIL else "fail"
            )
            checks.append(
                Check(
                    "clock",
                    verdict,
                    f"clock differs from the tenant's by {skew:.0f} s",
                    "" if verdict == "ok" else "enable NTP (timedatectl set-ntp true)",
                )
            )
    return checks

"""What counts as this machine: the one loopback test shared by every module that allows plain
HTTP only to loopback (proxy templates, the Auth0 issuer, the deploy target).

Pure and tiny on purpose: it imports nothing from aegisd, so any module may use it without
creating an import cycle. It must not resolve names (no DNS: ``localhost`` is taken at its word,
every other name is not loopback).
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Which URLs the ``[auth0]`` settings name: the issuer, the canonical tenant domain, and the
Management API audience.

Owns three pure rules, each from ``reference/auth0-protocol.md``:

* the issuer is ``https://{domain}/`` with its trailing slash (§6), or ``auth0.issuer``;
  plain ``http`` only for a loopback issuer with ``allow_insecure_http`` (the dev tenant);
* the *canonical* tenant domain (``TENANT.REGION.auth0.com``) may differ from the issuer's
  host when the tenant has a custom domain: ``auth0.tenant_domain`` names it; a
  ``*.auth0.com`` domain or a loopback issuer is its own canonical domain;
* the Management API audience is ``https://{canonical}/api/v2/`` even behind a custom domain
  (§11 correction to §4: "Continue to use your default tenant domain name … instead of your
  custom domain when specifying an audience"), unless ``[auth0.management] audience`` says
  otherwise.

It must not perform I/O or import anything above ``config``/``errors``/``loopback`` (policy,
deploy and the HTTP seam all use it; it is what broke the old ``http`` <-> ``policy`` cycle).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from aegisd.config import Auth0Config
from aegisd.errors import ConfigError
from aegisd.loopback import is_loopback_host

__all__ = [
    "canonical_domain",
    "issuer_from_config",
    "management_audience",
]

_DOMAIN: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?")
_AUTH0_SUFFIX: Final = ".auth0.com"


def issuer_from_config(cfg: Auth0Config) -> str:
    """The issuer URL, always with a trailing slash (reference §6).

    Raises:
        ConfigError: neither or conflicting ``domain``/``issuer``, a ``domain`` that is not a
            host name, or plain ``http`` for anything but a loopback issuer with
            ``allow_insecure_http = true``.
    """
    if cfg.issuer:
        issuer = cfg.issuer if cfg.issuer.endswith("/") else cfg.issuer + "/"
        parts = urlsplit(issuer)
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment:
            raise ConfigError("auth0.issuer: expected an https:// URL such as https://tenant/")
        if parts.scheme == "http" and not (cfg.allow_insecure_http and is_loopback_host(host)):
            raise ConfigError(
                "auth0.issuer: plain http is allowed only for a loopback issuer "
                "(127.0.0.1, ::1, localhost) with auth0.allow_insecure_http = true"
            )
        if cfg.domain and urlsplit(f"https://{cfg.domain}/").netloc != parts.netloc:
            raise ConfigError("auth0.domain and auth0.issuer name different hosts; set one")
        return issuer
    if cfg.domain:
        if not _DOMAIN.fullmatch(cfg.domain):
            raise ConfigError(
                "auth0.domain: expected a host name such as example.eu.auth0.com "
                "(no scheme, no path)"
            )
        return f"https://{cfg.domain}/"
    raise ConfigError("auth0: set either domain or issuer")


def canonical_domain(cfg: Auth0Config) -> str | None:
    """The canonical tenant host (``TENANT.REGION.auth0.com``), or ``None`` when unknown.

    ``auth0.tenant_domain`` wins; otherwise an issuer on ``*.auth0.com`` or on loopback (the
    dev tenant, which has no custom domain) is its own canonical domain. A custom domain
    without ``tenant_domain`` gives ``None``: the canonical name cannot be guessed from it.

    Raises:
        ConfigError: the issuer settings or ``tenant_domain`` are invalid.
    """
    issuer = issuer_from_config(cfg)
    if cfg.tenant_domain:
        if not _DOMAIN.fullmatch(cfg.tenant_domain) or ":" in cfg.tenant_domain:
            raise ConfigError(
                "auth0.tenant_domain: expected the canonical tenant host name such as "
                "example.eu.auth0.com (no scheme, no path)"
            )
        if not cfg.tenant_domain.lower().endswith(_AUTH0_SUFFIX):
            raise ConfigError(
                "auth0.tenant_domain: the canonical tenant domain ends in .auth0.com "
                "(Dashboard > Settings > Custom Domains shows it)"
            )
        return cfg.tenant_domain.lower()
    parts = urlsplit(issuer)
    host = (parts.hostname or "").lower()
    if host.endswith(_AUTH0_SUFFIX) or is_loopback_host(host):
        return parts.netloc.lower()
    return None


def management_audience(cfg: Auth0Config) -> str:
    """The Management API audience for client-credentials tokens.

    ``[auth0.management] audience`` when set, else ``https://{canonical}/api/v2/`` (the dev
    tenant's loopback issuer keeps its own ``http`` scheme).

    Raises:
        ConfigError: a custom domain without ``auth0.tenant_domain`` (and no explicit
            audience): the audience must name the canonical domain, which aegisd cannot guess.
    """
    if cfg.management is not None and cfg.management.audience:
        return cfg.management.audience
    domain = canonical_domain(cfg)
    if domain is None:
        raise ConfigError(
            "auth0.tenant_domain: required when auth0.domain/issuer is a custom domain: the "
            "Management API audience is always https://TENANT.REGION.auth0.com/api/v2/ "
            "(or set auth0.management.audience)"
        )
    scheme = urlsplit(issuer_from_config(cfg)).scheme
    return f"{scheme}://{domain}/api/v2/"

"""The distribution's name on PyPI and the installed version.

Owns the one place that knows the package is published as ``aegis-broker`` (the names
``aegis``, ``aegisctl`` and ``aegis-mcp`` belong to other projects on PyPI); the module and
command names stay ``aegisd``, ``aegisctl`` and ``aegis-mcp``. It must import nothing heavy:
every console script reads it for ``--version``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

__all__ = ["DISTRIBUTION", "installed_version"]

DISTRIBUTION: Final = "aegis-broker"


def installed_version() -> str:
    """The installed distribution's version, or ``0.0.0+unknown`` when run from a bare tree."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"

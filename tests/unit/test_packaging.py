"""Every Python package in the tree is shipped: a non-editable install (the system venv of
separated mode) would otherwise lack it and fail at import time, while editable installs and
the source tree hide the gap."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "aegisd").rglob("__init__.py")
        if "__pycache__" not in init.parts
    } | {"aegisctl"}
    found |= {"aegisd.auth0.actions"}  # a data package (the Action's JavaScript)
    assert found == listed

"""The package has no import circles, module by module and between the role folders.

The first landing had three (client <-> mcp_shim, auth0/http <-> policy, keyring_store <->
secrets); this keeps them from coming back. Imports under ``if TYPE_CHECKING:`` are ignored:
they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (ROOT / "aegisd", ROOT / "cli" / "aegisctl")
ROLE_FOLDERS = ("aegisd.auth0", "aegisd.client", "aegisd.mcp_shim", "aegisd.devtenant")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in PACKAGES:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {dep for dep in out if dep in known and dep != name}


def _graph(group: bool) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)

    def key(module: str) -> str:
        folder = ".".join(module.split(".")[:2])
        return folder if group and folder in ROLE_FOLDERS else module

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = {key(dep) for dep in _imports(name, path, known)} - {key(name)}
        graph.setdefault(key(name), set()).update(deps)
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(dep, [start, dep]) for dep in graph.get(start, ())]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        if node == start:
            return trail
        if node in seen:
            continue
        seen.add(node)
        stack.extend((dep, [*trail, dep]) for dep in graph.get(node, ()))
    return None


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = _graph(group=False)
    assert len(graph) > 100  # the walk found the package
    cycles = [c for c in (_cycle_from(m, graph) for m in sorted(graph)) if c]
    assert cycles == []


def test_role_folders_do_not_import_each_other_round_a_circle() -> None:
    graph = _graph(group=True)
    assert "aegisd.client" in graph["aegisd.mcp_shim"]  # the shim is a client of the SDK
    cycles = [c for c in (_cycle_from(f, graph) for f in ROLE_FOLDERS) if c]
    assert cycles == []

"""The package's shape: imports go downward only (no cycle, counting the imports made inside
functions), nothing imports the CLI or the server, storage never imports models."""

import ast
from pathlib import Path

import finerank

ROOT = Path(finerank.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """finerank module -> the finerank modules it imports, anywhere in its file."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each a path that returns to its first module."""
    found, done = [], set()

    def walk(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                found.append(path[path.index(target) :] + [target])
            elif target not in done:
                walk(target, path + [target])
        done.add(module)

    for module in sorted(graph):
        walk(module, [module])
    return found


def test_imports_go_downward_only():
    graph = import_graph()
    assert "finerank.pipeline" in graph and "finerank.retrievers" in graph["finerank.registry"]
    assert cycles(graph) == []
    for module, imported in graph.items():
        if not module.startswith(("finerank.cli", "finerank.server")):
            assert not {m for m in imported if m.startswith(("finerank.cli", "finerank.server"))}, module
    for storage in ("finerank.index", "finerank._storage", "finerank.corpus"):
        assert not {m for m in graph[storage] if m.startswith("finerank.models")}, storage


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]

"""Dependencies point one way: the import graph of fer_lightning, read with `ast` (every import, including those
inside functions), has no cycle and no forbidden edge.

- `data/` and `models/` import nothing of fer_lightning outside themselves, except the leaf `errors` (the user-error
  base class, which imports nothing of fer_lightning);
- nothing imports `fer_lightning.cli` (the entry points), and no library module imports `bench/` or `tools/`
  (the commands over the library; they may import it, and themselves).

An edge is what an import statement names (`from fer_lightning.data import views` -> `fer_lightning.data.views`);
the parent packages Python initialises on the way are not edges, or everything would depend on
`fer_lightning/__init__.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fer_lightning"
SELF_CONTAINED = ("fer_lightning.data", "fer_lightning.models")
LEAVES = ("fer_lightning.errors",)  # import nothing of fer_lightning, so anything may import them
COMMANDS = ("fer_lightning.bench", "fer_lightning.tools")
ENTRY_POINTS = "fer_lightning.cli"

Edge = tuple[str, str, int]  # importer, imported, line


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve(name: str, known: set[str]) -> str | None:
    """The module an imported dotted name lives in: itself, else its longest known prefix."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """Dotted names one import statement names: modules, and `module.name` for each `from module import name`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the importer's package, one level up per dot after the first
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_edges(files: dict[str, Path]) -> list[Edge]:
    known, edges = set(files), set()
    for importer, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in imported_names(node, importer, path.name == "__init__.py"):
                target = resolve(name, known) if name.startswith("fer_lightning") else None
                if target is not None and target != importer:
                    edges.add((importer, target, node.lineno))
    return sorted(edges)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden(edge: Edge) -> str | None:
    """Why an edge breaks the rules, or None."""
    importer, target, _ = edge
    for package in SELF_CONTAINED:
        if within(importer, package) and not within(target, package) and target not in LEAVES:
            return f"{package} imports nothing of fer_lightning outside itself"
    if importer in LEAVES:
        return f"{importer} is a leaf: it imports nothing of fer_lightning"
    if within(target, ENTRY_POINTS):
        return "nothing imports the entry points (config wiring lives in fer_lightning.config)"
    for package in COMMANDS:
        if within(target, package) and not any(within(importer, command) for command in COMMANDS):
            return f"the library does not import the commands in {package}"
    return None


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One import cycle, as the edges that close it, or None (depth-first search)."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge[0], []).append(edge)
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[Edge] = []

    def visit(module: str) -> list[Edge] | None:
        state[module] = "open"
        for edge in graph.get(module, []):
            target = edge[1]
            if state.get(target) == "open":
                start = next(i for i, (importer, _, _) in enumerate(path) if importer == target) if path else 0
                return [*path[start:], edge] if path and path[start][0] == target else [edge]
            if target not in state:
                path.append(edge)
                found = visit(target)
                if found:
                    return found
                path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def describe(edges: list[Edge]) -> str:
    return "\n".join(
        f"  {importer} -> {target}  ({importer.replace('.', '/')}.py line {line})" for importer, target, line in edges
    )


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(modules())


def test_the_graph_is_read(edges: list[Edge]) -> None:
    pairs = {(importer, target) for importer, target, _ in edges}
    assert ("fer_lightning.training", "fer_lightning.sweep.jobs") in pairs  # a module-level import
    assert ("fer_lightning.cli", "fer_lightning.training") in pairs  # an import inside a function
    assert ("fer_lightning.data.formats", "fer_lightning.data.formats.fer2013") in pairs


def test_no_forbidden_edge(edges: list[Edge]) -> None:
    broken = [(edge, reason) for edge in edges if (reason := forbidden(edge))]
    message = "\n".join(f"{describe([edge])}: {reason}" for edge, reason in broken)
    assert not broken, f"imports against the dependency rules:\n{message}"


def test_no_import_cycle(edges: list[Edge]) -> None:
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle:\n{describe(cycle or [])}"


def test_the_checks_name_what_breaks_them() -> None:
    """The checkers themselves, on made-up graphs: a cycle comes back edge by edge, a bad edge with its reason."""
    looped = [("a", "b", 1), ("b", "c", 2), ("c", "a", 3), ("c", "d", 4)]
    assert find_cycle(looped) == [("a", "b", 1), ("b", "c", 2), ("c", "a", 3)]
    assert find_cycle([("a", "b", 1), ("b", "c", 2)]) is None
    assert "outside itself" in forbidden(("fer_lightning.data.views", "fer_lightning.lit_module", 1))
    assert "commands" in forbidden(("fer_lightning.training", "fer_lightning.bench.timing", 1))
    assert "entry points" in forbidden(("fer_lightning.bench.loader", "fer_lightning.cli", 1))
    assert forbidden(("fer_lightning.bench.loader", "fer_lightning.training", 1)) is None
    assert imported_names(ast.parse("from . import jobs").body[0], "fer_lightning.sweep", True) == [
        "fer_lightning.sweep",
        "fer_lightning.sweep.jobs",
    ]

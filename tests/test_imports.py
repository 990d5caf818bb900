"""muscle_jax's modules import one another without a cycle.

The graph is read from the source (`ast`), nothing is imported: an edge A -> B
for every import in A of a module B of the package, whether at module level
or deferred into a function (a deferred import only hides a cycle until the
function runs: ``files`` <-> ``sources`` was one), with relative imports
resolved, ``from muscle_jax.x import y`` naming the submodule ``x.y`` when
there is one and the package ``x`` otherwise, and importing ``a.b.c`` also
running the packages ``a.b`` (and ``a``) that hold it. Imports under ``if
TYPE_CHECKING:`` never run and are left out.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "muscle_jax"

# Packages whose own modules import from the package itself on purpose, an edge
# this test leaves out: `muscle_jax.methods` imports its built-in terms at its
# end, and each registers itself with the package's `register` on import.
SELF_REGISTERING_PACKAGES = ("muscle_jax.methods",)


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """{dotted name: (file, whether it is a package's __init__)} of every module."""
    modules = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement of ``tree``, in functions too, outside ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _imported(node, importer: str, is_package: bool, modules) -> set[str]:
    """The modules of the package that ``node`` in ``importer`` names (its targets)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        package = importer if is_package else importer.rpartition(".")[0]
        parts = package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    targets = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            targets.add(f"{base}.{alias.name}")  # A submodule.
        elif base in modules:
            targets.add(base)  # A name the module (or package) defines.
    return targets


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules that importing it imports directly}."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        own = set(_ancestors(name)) | ({name} if is_package else set())
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, name, is_package, modules):
                edges.add(target)
                # Importing a.b.c runs a.b's __init__ first, unless it is already running.
                edges.update(p for p in _ancestors(target) if p in modules and p not in own)
        for package in SELF_REGISTERING_PACKAGES:
            if name.startswith(package + "."):
                edges.discard(package)
        edges.discard(name)
        graph[name] = edges
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, queue = set(), [start]
    for node in queue:
        for child in graph[node] - seen:
            seen.add(child)
            queue.append(child)
    return seen


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The sets of two or more modules that each import (through others) one another."""
    reach = {node: _reachable(graph, node) for node in graph}
    components = {
        frozenset(other for other in reach[node] if node in reach[other])
        for node in graph
        if node in reach[node]
    }
    return sorted((c for c in components if len(c) > 1), key=min)


def a_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One cycle through ``component``'s first module: [A, B, ..., A] (breadth-first)."""
    start = min(component)
    parent = {start: None}
    queue = [start]
    for node in queue:
        for child in sorted(graph[node] & component):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # A component always has one.


def test_the_graph_reads_every_kind_of_import():
    graph = import_graph()
    assert "muscle_jax.data.types" in graph["muscle_jax.data.files"]  # from PACKAGE import MODULE
    assert "muscle_jax.distributed" in graph["muscle_jax.config_defaults"]  # Deferred.
    # A submodule's package runs first: config_validation imports muscle_jax.data.splits.
    assert "muscle_jax.data" in graph["muscle_jax.config_validation"]
    # But not the importer's own package, already running: files imports data.types.
    assert "muscle_jax.data" not in graph["muscle_jax.data.files"]
    modules = _modules()

    def targets(statement: str, importer: str, is_package: bool = False) -> set[str]:
        return _imported(ast.parse(statement).body[0], importer, is_package, modules)

    assert targets("from muscle_jax.methods import register", "m") == {"muscle_jax.methods"}
    assert targets("import muscle_jax.data.files as f", "m") == {"muscle_jax.data.files"}
    assert targets("from ..data import files", "muscle_jax.experiments.results") == {
        "muscle_jax.data.files"
    }
    assert targets("from . import base", "muscle_jax.methods", is_package=True) == {
        "muscle_jax.methods.base"
    }
    assert targets("from .sources import open_source", "muscle_jax.data.files") == {
        "muscle_jax.data.sources"
    }
    assert targets("import numpy", "m") == set()
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n")
    assert [type(node).__name__ for node in _imports(tree)] == ["ImportFrom"]


def test_there_is_no_import_cycle():
    graph = import_graph()
    cycles = strongly_connected(graph)
    lines = [f"{' -> '.join(a_cycle(graph, c))} (all of: {', '.join(sorted(c))})" for c in cycles]
    assert not cycles, "Import cycles in muscle_jax:\n  " + "\n  ".join(lines)


def test_the_cycle_finder_finds_and_prints_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    (component,) = strongly_connected(graph)
    assert component == {"a", "b", "c"}
    assert a_cycle(graph, component) == ["a", "b", "c", "a"]

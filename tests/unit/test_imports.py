"""The import structure, read from the source (``ast``; nothing is imported).

Every ``.py`` under ``pipeline/``, ``workers/`` and ``bench/`` is parsed and its imports are
resolved to modules of the tree: ``import a.b`` imports ``a.b``; ``from a import b`` imports
``a.b`` when that is a module, else ``a``; relative imports are resolved against the importing
module's package. Every import statement counts, wherever it stands (module level, inside a
function, under ``if TYPE_CHECKING``): each one ties the two modules together. The package
``__init__`` that Python runs before a submodule is not counted as imported (that is not a
choice the importing code makes).

Checked: no import cycles; no import from a lower layer up to a higher one (:data:`LAYERS`);
no module of ``pipeline/`` or ``workers/`` over :data:`MAX_LINES` lines. ``tests`` and
``training`` are outside the layer check, but nothing here may import ``tests``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "workers", "bench")
MAX_LINES = 400

#: Lowest first; a module may import its own layer or a lower one. A pattern ``x.*`` matches
#: ``x`` and everything under it; ``x*`` matches every module whose name starts with ``x``.
LAYERS: tuple[tuple[str, ...], ...] = (
    # pipeline.models: the bundled model files' paths (data only, imports nothing of the tree)
    ("pipeline.settings*", "pipeline.errors", "pipeline.models"),
    ("pipeline.logs", "pipeline.vision.*", "pipeline.synth.*"),
    ("pipeline.schemas", "pipeline.inference.*"),
    ("pipeline.state.*", "pipeline.storage.*"),
    ("pipeline.runtime.*",),
    ("pipeline.client", "pipeline.embedded", "pipeline.evaluation.*"),
    # the web dashboard reads through client/state/runtime; the command line starts it
    ("pipeline.dashboard.*",),
    ("pipeline.cli*", "pipeline.testing.*", "pipeline"),
    ("workers.*",),
    ("bench.*",),
)
#: Top-level packages no module of the tree may import.
FORBIDDEN_TARGETS = ("tests",)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool
    """Inside a function or under ``if TYPE_CHECKING`` (not run when the module loads)."""

    def where(self) -> str:
        return f"{module_path(self.source)}:{self.line}" + (" (lazy)" if self.lazy else "")


def _files() -> Iterator[Path]:
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).parts
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue  # a venv (bench/celery_baseline/.venv), caches
            yield path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the tree."""
    return {_module_name(path): path for path in _files()}


def module_path(name: str) -> str:
    return str(modules()[name].relative_to(REPO))


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of the tree that ``name`` names (or its longest known prefix)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _lazy_lines(tree: ast.Module) -> set[int]:
    """Line numbers of import statements inside functions or ``if TYPE_CHECKING`` blocks."""
    lazy: set[int] = set()
    for node in ast.walk(tree):
        body: list[ast.stmt] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
        elif isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                body = node.body
        for stmt in body:
            for inner in ast.walk(stmt):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lazy.add(inner.lineno)
    return lazy


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """Absolute names of what ``node`` in module ``source`` imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        package = source if _is_package(source) else source.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        yield f"{base}.{alias.name}" if alias.name != "*" else base


@cache
def imports() -> tuple[Import, ...]:
    """Every import of the tree whose target is a module of the tree (or a forbidden one)."""
    known = modules()
    found: list[Import] = []
    for source, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy = _lazy_lines(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _targets(source, node):
                if name.split(".", 1)[0] in FORBIDDEN_TARGETS:
                    found.append(Import(source, name, node.lineno, node.lineno in lazy))
                    continue
                target = _resolve(name, known)
                if target is not None and target != source:
                    found.append(Import(source, target, node.lineno, node.lineno in lazy))
    return tuple(found)


def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        stem = pattern[:-2]
        return name == stem or name.startswith(stem + ".")
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def layer(name: str) -> int | None:
    for index, patterns in enumerate(LAYERS):
        if any(_matches(name, p) for p in patterns):
            return index
    return None


def _knots(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan): every module of
    one reaches every other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(components, key=min)


def _cycle_through(start: str, component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest cycle from ``start`` back to itself inside ``component``."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*paths[node], start]
            if nxt in component and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{start} is in no cycle of {sorted(component)}")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module that is in a cycle, without repeats."""
    cycles: list[list[str]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for component in _knots(edges):
        for start in sorted(component):
            cycle = _cycle_through(start, component, edges)
            key = frozenset(pairwise(cycle))
            if key not in seen:
                seen.add(key)
                cycles.append(cycle)
    return cycles


def test_the_tree_is_found() -> None:
    found = modules()
    assert "pipeline.settings" in found
    assert "workers" in found
    assert "bench" in found
    assert imports(), "no imports resolved: the parser is broken"


def test_every_pipeline_module_has_a_layer() -> None:
    unplaced = sorted(name for name in modules() if layer(name) is None)
    assert not unplaced, (
        "modules without a layer — assign each one a layer in LAYERS of "
        "tests/unit/test_imports.py (a module may import its own layer or lower ones): "
        + ", ".join(f"{name} ({module_path(name)})" for name in unplaced)
    )


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for imp in imports():
        if imp.target.split(".", 1)[0] in FORBIDDEN_TARGETS:
            continue
        edges.setdefault(imp.source, set()).add(imp.target)
        where.setdefault((imp.source, imp.target), imp)
    cycles = _cycles(edges)
    report = [
        " -> ".join(cycle)
        + "\n      "
        + "; ".join(f"{a} imports {b} at {where[(a, b)].where()}" for a, b in pairwise(cycle))
        for cycle in cycles
    ]
    assert not cycles, f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(report)


def test_no_upward_imports() -> None:
    upward: list[str] = []
    for imp in imports():
        source_layer = layer(imp.source)
        if imp.target.split(".", 1)[0] in FORBIDDEN_TARGETS:
            upward.append(f"{imp.source} imports {imp.target} at {imp.where()}: tests are "
                          "above everything; move what both need to pipeline/testing")  # fmt: skip
            continue
        target_layer = layer(imp.target)
        if source_layer is None or target_layer is None:
            continue  # reported by test_every_pipeline_module_has_a_layer
        if target_layer > source_layer:
            upward.append(
                f"{imp.source} (layer {source_layer}) imports {imp.target} "
                f"(layer {target_layer}) at {imp.where()}"
            )
    assert not upward, f"{len(upward)} upward import(s):\n  " + "\n  ".join(sorted(upward))


def test_no_module_over_the_line_limit() -> None:
    over = sorted(
        (lines, name)
        for name, path in modules().items()
        if name.split(".", 1)[0] in ("pipeline", "workers")
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{module_path(name)} ({lines})" for lines, name in reversed(over)
    )


def test_the_checks_see_what_they_must() -> None:
    """The resolver on known shapes: relative imports, ``from pkg import module``, cycles."""
    known = modules()
    assert _resolve("pipeline.settings.Settings", known) == "pipeline.settings"
    assert _resolve("numpy", known) is None
    assert layer("pipeline") == 7
    assert layer("pipeline.cli.main") == layer("pipeline.cli") == 7
    assert layer("pipeline.dashboard.app") == layer("pipeline.dashboard") == 6
    assert layer("pipeline.vision") == layer("pipeline.vision.render") == 1
    assert layer("pipeline.unknown") is None
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from . import s3stub\nfrom .s3stub import server, S3Stub\n")
    nodes = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    got = [t for n in nodes for t in _targets("pipeline.testing", n)]
    assert got == [
        "pipeline.testing.s3stub",
        "pipeline.testing.s3stub.server",
        "pipeline.testing.s3stub.S3Stub",
    ]
    assert _resolve(got[2], known) == "pipeline.testing.s3stub"

"""No import cycles among the modules of ``pipeline/``, ``workers/`` and ``bench/``.

The other import rules (the layers, nothing imports ``tests``) are import-linter contracts:
``[tool.importlinter]`` in pyproject.toml, checked by ``lint-imports`` (scripts/test). They
rule out a cycle between two layers, not one inside a layer, and import-linter's own
``acyclic_siblings`` contract checks packages, not modules (it would forbid ``state`` and
``storage``, one layer, importing each other at all, and misses a package's ``__init__``
importing a submodule that imports the package back). So the cycles are checked here, on the
same graph: grimp's, import-linter's library. Every import counts, wherever it stands
(module level, inside a function, under ``if TYPE_CHECKING``); the package ``__init__`` that
Python runs before a submodule is not counted as imported.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pipeline", "workers", "bench")


def cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One shortest cycle through each import that closes one, without repeats."""
    found: list[tuple[str, ...]] = []
    seen: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None and frozenset(back) not in seen:
                seen.add(frozenset(back))
                found.append((importer, *back))
    return found


def _where(graph: grimp.ImportGraph, cycle: tuple[str, ...]) -> str:
    steps = []
    for importer, imported in pairwise(cycle):
        lines = ", ".join(
            str(d["line_number"])
            for d in graph.get_import_details(importer=importer, imported=imported)
        )
        steps.append(f"{importer} -> {imported} (l.{lines})")
    return "\n      ".join(steps)


def test_no_import_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(REPO)  # grimp finds the packages on the path (bench: a checkout's)
    graph = grimp.build_graph(*ROOTS, exclude_type_checking_imports=False, cache_dir=None)
    assert {"pipeline.settings", "workers", "bench"} <= graph.modules
    assert graph.count_imports() > 0, "no imports found: the graph is not the tree's"
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle(s):\n  " + "\n  ".join(
        _where(graph, cycle) for cycle in found
    )


def test_the_check_sees_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "d")]:
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [("a", "b", "c", "a")]
    graph.remove_import(importer="c", imported="a")
    assert cycles(graph) == []

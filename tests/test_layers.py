"""The layout's layers, read from every import in the source (deferred ones too): each package
imports only from the layers below it, and only `flows/` knows Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Lowest first: a package may import its own layer and those before it, never a later one.
LAYERS = [
    "bertflow.pipeline",  # its own modules, if any, are as low as core
    "bertflow.pipeline.core",  # the artifact store and what every stage runs with
    "bertflow.pipeline.ingest",
    "bertflow.pipeline.tokenizer",
    "bertflow.pipeline.shards",
    "bertflow.model",  # the model, its export and its card (not the two packages below)
    "bertflow.model.training",
    "bertflow.model.evaluation",
    "bertflow.flows",  # Prefect, the CLI and the served deployments
]
FOLDERS = {"pipeline": "bertflow.pipeline", "model": "bertflow.model", "flows": "bertflow.flows"}


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix of `module`."""
    matches = [
        i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")
    ]
    return max(matches, key=lambda i: len(LAYERS[i]))


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCES = modules()


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_run_down_the_layers(module: str) -> None:
    own = layer(module)
    upward = sorted(
        name
        for name in imports(SOURCES[module])
        if name in SOURCES and name.startswith("bertflow.") and layer(name) > own
    )
    assert not upward, f"{module} ({LAYERS[own]}) imports from a later layer: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if not m.startswith("bertflow.flows")))
def test_only_flows_know_prefect(module: str) -> None:
    prefect = sorted(n for n in imports(SOURCES[module]) if n.split(".")[0] == "prefect")
    assert not prefect, f"{module} imports {prefect}: Prefect belongs in flows/"


def test_every_module_has_a_layer() -> None:
    assert len(SOURCES) > 60 and all(layer(m) >= 0 for m in SOURCES)


def test_no_import_cycles_even_through_deferred_imports() -> None:
    """An import inside a function does not make a cycle go away; none is needed."""
    graph = {
        m: sorted(n for n in imports(p) if n in SOURCES and n != m) for m, p in SOURCES.items()
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for name in graph[module]:
            visit(name, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])

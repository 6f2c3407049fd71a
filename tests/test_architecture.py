"""The import graph of asdzoo (every import statement, function-level ones included) has no cycle, and the
layers only import downwards: data -> audio -> encoders -> nn -> scoring -> metrics is how data flows at run time;
``nn`` holds layers (ViT blocks, pooling, heads, LoRA, batching) that know no encoder, so encoders build on it and it
sits below them. The registry, cards and hub come above, tasks, systems and the command line on top (DESIGN §1)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "asdzoo"

# Lowest first; a module may import its own layer (without cycles) and any layer below it.
LAYERS = [
    # asdzoo.data.s5: the Task 4 constants (classes, rate, FOA channel order), imports nothing, needed at every layer
    ["asdzoo.version", "asdzoo.atomic", "asdzoo.config", "asdzoo.data.s5"],
    ["asdzoo.audio"],
    ["asdzoo.data"],
    ["asdzoo.nn"],
    ["asdzoo.encoders"],
    ["asdzoo.scoring"],
    ["asdzoo.metrics"],
    ["asdzoo.weights", "asdzoo.zoo"],
    ["asdzoo.cards"],
    ["asdzoo.hub"],
    ["asdzoo", "asdzoo.tasks"],
    ["asdzoo.callbacks", "asdzoo.tuning"],
    ["asdzoo.systems"],
    ["asdzoo.search", "asdzoo.cli"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in modules:  # `from asdzoo.x import name` -> asdzoo.x
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("asdzoo"):
                    graph.add_edge(name, t)
    return graph


def layer_of(module: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer: add it to LAYERS"
    return level


def test_import_graph_has_no_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_layers_import_only_downwards():
    upward = [(a, b) for a, b in import_graph().edges if layer_of(b) > layer_of(a)]
    assert not upward, f"imports from a lower layer into a higher one: {upward}"


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # cli imports these inside its command functions only
    assert graph.has_edge("asdzoo.cli", "asdzoo.tasks.task2") and graph.has_edge("asdzoo.cli", "asdzoo.search")

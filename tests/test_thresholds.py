"""The pass marks themselves: each must still prove something, and each must be used."""

import ast
from pathlib import Path

from thresholds import MARGIN, MARKS, SEEDS


def test_every_mark_is_clearly_better_than_chance_and_below_every_measurement():
    for name, mark in MARKS.items():
        assert len(mark.measured) == len(SEEDS), name
        if mark.higher_is_better:
            assert mark.threshold >= mark.chance + MARGIN, name  # passing still means better than untrained
            assert mark.threshold <= min(mark.measured) - 0.02, name
        else:
            assert mark.threshold <= mark.chance - MARGIN, name
            assert mark.threshold >= max(mark.measured) + 0.02, name


def test_every_mark_is_checked_by_a_test():
    """A mark no test checks is stale (renamed or removed test); names are f-strings, so compare their fixed parts."""
    used = []
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check" and node.args:
                arg = node.args[0]
                parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                used.append([p.value for p in parts if isinstance(p, ast.Constant)])
    for name in MARKS:
        assert any(all(fixed in name for fixed in parts) for parts in used), f"no test checks {name!r}"

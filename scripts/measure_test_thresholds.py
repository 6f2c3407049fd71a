"""Measure every pass mark of ``tests/thresholds.py`` on several seeds of the tests' synthetic data.

    python scripts/measure_test_thresholds.py --seeds 0 1 2 3

runs the test functions that call ``check`` once per seed (ASDZOO_TEST_SEED) with ASDZOO_RECORD_MARKS set, then prints
each mark's values per seed, their spread, and the threshold ``thresholds.py`` would derive from them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tests_with_marks() -> list[str]:
    """Node ids of the test functions that call ``check`` (only they are run: the rest has no marks)."""
    ids = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            is_test = isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            if is_test and "check(" in ast.get_source_segment(source, node):
                ids.append(f"tests/{path.name}::{node.name}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("tests", nargs="*", help="pytest node ids (default: every test function that calls check)")
    args = parser.parse_args()
    values: dict[str, dict[int, float]] = defaultdict(dict)
    tests = args.tests or tests_with_marks()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            record = Path(tmp) / f"seed{seed}.jsonl"
            env = dict(os.environ, ASDZOO_TEST_SEED=str(seed), ASDZOO_RECORD_MARKS=str(record), HF_HUB_OFFLINE="1")
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
            print(f"seed {seed}: {len(tests)} tests ...", flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env, check=False)
            for line in record.read_text().splitlines() if record.exists() else []:
                row = json.loads(line)
                values[row["name"]][row["seed"]] = row["value"]
    sys.path.insert(0, str(ROOT / "tests"))
    from thresholds import MARGIN, MARKS, Mark

    print(f"\n{'mark':70s} " + " ".join(f"seed {s:<3d}" for s in args.seeds) + "  threshold (current)")
    for name in sorted(values):
        row = [values[name].get(s, float("nan")) for s in args.seeds]
        old = MARKS.get(name)
        kept = dict(higher_is_better=old.higher_is_better, margin=old.margin) if old else {}
        new = Mark(tuple(row), chance=0.0, **kept)
        now = f"{old.threshold}" if old else "new"
        cells = " ".join(f"{v:8.4f}" for v in row)
        print(f"{name:70s} {cells}  {new.threshold:.3f} ({now})")
    print("\nTo paste into MARKS (chance, direction and margin kept from the current mark; '?' = set by hand):")
    for name in sorted(values):
        old = MARKS.get(name)
        measured = ", ".join(f"{values[name].get(s, float('nan')):.4f}" for s in args.seeds)
        extra = "" if old is None or old.higher_is_better else ", higher_is_better=False"
        extra += "" if old is None or old.margin == MARGIN else f", margin={old.margin}"
        print(f'    "{name}": Mark(({measured}), chance={old.chance if old else "?"}{extra}),')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

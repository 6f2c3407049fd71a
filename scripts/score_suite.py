"""Official scores of zoo entries on several presets and seeds of the built-in suite (``asdzoo synth t2``).

    python scripts/score_suite.py --entries dcase-ae-mse genrep-logmel genrep-aisfx genrep \
        --presets easy dcase hard --seeds 0 1 2 --data data/suite --out suite_scores.json

Generates each missing ``<data>/<preset>_s<seed>`` root, then fits and scores every entry on every root (per machine:
fit on train/, score test/, the official hmean over AUC(s), AUC(t), pAUC) and prints one row per entry with the
per-root scores, their mean, worst and spread. This is how the zoo's defaults and the README's numbers are measured:
on several roots, never one. With ``--out`` the results accumulate in a JSON file (re-runs skip what is there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from asdzoo.atomic import write_text
from asdzoo.data.synth import SynthConfig, generate
from asdzoo.hub import load
from asdzoo.tasks.task2 import dev_official_score


def suite_root(data: Path, preset: str, seed: int) -> Path:
    root = data / f"{preset}_s{seed}"
    if not root.is_dir():
        generate(root, SynthConfig.from_preset(preset, seed=seed), progress=False)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="+", required=True, help="registry names or saved model folders")
    parser.add_argument("--presets", nargs="+", default=["easy", "dcase", "hard"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=Path("data/suite"))
    parser.add_argument("--out", type=Path, help="JSON file of results, read first and extended")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    roots = [(p, s) for p in args.presets for s in args.seeds]
    for entry in args.entries:
        for preset, seed in roots:
            key = f"{preset}_s{seed}"
            if key in results.get(entry, {}):
                continue
            root = suite_root(args.data, preset, seed)
            t0 = time.time()
            score = dev_official_score(load(entry), root)
            results.setdefault(entry, {})[key] = score
            print(f"{entry} {key}: {100 * score:.2f} ({time.time() - t0:.0f} s)", flush=True)
            if args.out:
                write_text(args.out, json.dumps(results, indent=1))
    keys = [f"{p}_s{s}" for p, s in roots]
    print(f"\n| entry | {' | '.join(keys)} | mean | worst | spread |")
    print("|---" * (len(keys) + 4) + "|")
    for entry in args.entries:
        v = np.array([results[entry][k] for k in keys]) * 100
        cells = " | ".join(f"{x:.2f}" for x in v)
        print(f"| {entry} | {cells} | {v.mean():.2f} | {v.min():.2f} | {v.max() - v.min():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""aum-poe on the built-in suite (paper 004's Tables 1-2 rows that run on CPU): one stage-1 backbone, then
machine-specific stage 2 (pOE + GRL, pOE only, OC-SVDD + GRL, OC-SVDD only, without pre-training) and the
machine-generalised stage 2, against the stage-1 backbone alone and the DCASE AE baseline; official scores with
centre and kNN scoring.

    python benchmarks/aum_poe.py --preset dcase --seeds 11 12 13 [--quick] [--epochs STAGE1 STAGE2]

Sizes are reduced for 2 CPU cores (stated in the output): a small Audio-Mamba, fewer clips per epoch and epochs
than the paper's 1,000 x 100. Data seeds default to ones no test or default was tuned on.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import lightning as L
import numpy as np
import torch

from asdzoo.data.balanced import BalancedNormalsDataModule
from asdzoo.data.synth import SynthConfig, generate
from asdzoo.data.task2 import Task2DataModule, list_machines
from asdzoo.hub import load, save_pretrained
from asdzoo.metrics.task2 import official_score, section_metrics
from asdzoo.systems.aum_poe import AumPoe, AumPretrainer
from asdzoo.tasks.task2 import all_clips, clip_batches, dev_official_score, load_machine

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
ABLATIONS = {
    "pOE + GRL (full)": dict(),
    "pOE only": dict(use_grl=False),
    "OC-SVDD + GRL": dict(loss="oc_svdd"),
    "OC-SVDD only": dict(loss="oc_svdd", use_grl=False),
    "without pre-training": dict(pretrained=False),
}


def official(model: AumPoe, root: Path, scorings: tuple[str, ...]) -> dict[str, float]:
    """Official score per scoring rule: per machine fit a copy once, score test/ with each rule."""
    triplets = {s: [] for s in scorings}
    for machine in list_machines(root):
        data = load_machine(root, machine)
        det = copy.deepcopy(model)
        train = all_clips(data.train, data.channels)
        det.fit(train["wave"], [int(c.domain == "target") for c in data.train], train["lengths"])
        labels = [int(c.meta.is_anomaly) for c in data.test]
        domains = [int(c.domain == "target") for c in data.test]
        emb = torch.cat([det.embed(b["wave"], b["lengths"])["main"] for b in clip_batches(data.test, data.channels)])
        for s in scorings:
            det.hparams.scoring = s
            m = section_metrics(labels, det.score_embeddings({"main": emb}), domains)
            triplets[s] += [m["AUC (source)"], m["AUC (target)"], m["pAUC"]]
    return {s: official_score(t) for s, t in triplets.items()}


def train_stage1(root: Path, aum: dict, epochs: int, seed: int) -> tuple[AumPretrainer, float]:
    """Stage 1 on 90 % of the normal clips; returns the backbone and its machine-type accuracy on the other 10 %."""
    L.seed_everything(seed, verbose=False)
    model = AumPretrainer(aum=aum, lr=1e-3)
    data = Task2DataModule(str(root), batch_size=16, segment_seconds=None, class_by="machine", val_fraction=0.1)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, num_sanity_val_steps=0, **QUIET)
    trainer.fit(model, data)
    return model, float(trainer.callback_metrics["val/acc"])


def train_generalised(root: Path, backbone: str, stage2: dict, epochs: int, seed: int) -> AumPoe:
    L.seed_everything(seed, verbose=False)
    model = AumPoe(backbone=backbone, **stage2, finetune_in_fit=False)
    data = BalancedNormalsDataModule(
        str(root), clips_per_machine=stage2["clips_per_machine"], batch_size=stage2["batch_size"], segment_seconds=None
    )
    stop = L.pytorch.callbacks.EarlyStopping("val/auc", mode="max", patience=stage2["patience"])
    L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[stop], num_sanity_val_steps=0, **QUIET).fit(model, data)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="dcase")
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    p.add_argument("--quick", action="store_true", help="2 machines, fewer epochs (a smoke run)")
    p.add_argument("--epochs", type=int, nargs=2, metavar=("STAGE1", "STAGE2"), help="instead of the defaults")
    args = p.parse_args()
    torch.set_num_threads(2)
    aum = dict(spectrogram_size=(128, 320), embed_dim=64, depth=6, d_state=8, unshuffle=4)
    stage2 = dict(unfreeze_blocks=2, head_hidden=128, embed_dim=64, clips_per_machine=200, batch_size=32, patience=5)
    s1_epochs, s2_epochs = args.epochs or ((3, 4) if args.quick else (10, 20))
    print(f"AuM {aum}; stage 1 {s1_epochs} epochs; stage 2 {stage2}, <= {s2_epochs} epochs (paper: 1000 x 100)")
    rows: dict[str, list[float]] = {}
    with TemporaryDirectory() as tmp:
        for seed in args.seeds:
            extra = dict(machines=("fan", "valve")) if args.quick else {}
            root = generate(
                Path(tmp) / f"s{seed}",
                SynthConfig.from_preset(args.preset, seed=seed, **extra),
                workers=2,
                progress=False,
            )
            t0 = time.time()
            stage1, held_out_acc = train_stage1(root, aum, s1_epochs, seed)
            backbone = str(Path(tmp) / f"stage1_s{seed}")
            save_pretrained(stage1, backbone, "aum-poe-stage1")
            print(f"seed {seed}: stage 1 in {time.time() - t0:.0f} s, held-out machine accuracy {held_out_acc:.3f}")
            # what stage 2 adds: the stage-1 class-token embedding itself as the kNN detector
            rows.setdefault("stage 1 only, no stage 2 [knn]", []).append(dev_official_score(stage1, root))
            for name, change in ABLATIONS.items():
                t0 = time.time()
                change = dict(change)
                src = dict(backbone=backbone) if change.pop("pretrained", True) else dict(backbone=None, aum=aum)
                model = AumPoe(**src, **stage2, **change, fit_epochs=s2_epochs, seed=seed)
                for scoring, value in official(model, root, ("centre", "knn")).items():
                    rows.setdefault(f"specific {name} [{scoring}]", []).append(value)
                print(f"  specific {name}: {time.time() - t0:.0f} s")
            t0 = time.time()
            gen = train_generalised(root, backbone, stage2, s2_epochs, seed)
            for scoring, value in official(gen, root, ("centre", "knn")).items():
                rows.setdefault(f"generalised pOE + GRL [{scoring}]", []).append(value)
            print(f"  generalised: {time.time() - t0:.0f} s")
            ae = load("dcase-ae-mse")
            rows.setdefault("DCASE AE baseline (MSE, 100 epochs)", []).append(dev_official_score(ae, root))
            report(rows, args.preset, args.seeds[: args.seeds.index(seed) + 1])


def report(rows: dict[str, list[float]], preset: str, seeds: list[int]) -> None:
    """Print the table so far: after every seed, so a long run that is stopped still leaves its numbers."""
    print(f"\nofficial score (%) on preset {preset!r}, seeds {seeds}", flush=True)
    for name, values in rows.items():
        v = 100 * np.array(values)
        print(f"{name:45s} " + " / ".join(f"{x:.2f}" for x in v) + f"   mean {v.mean():.2f}, spread {np.ptp(v):.2f}")


if __name__ == "__main__":
    main()

"""Longer CPU run of beats-distill on the built-in synthetic set: untrained vs teacher-only vs student.

    python benchmarks/beats_distill.py --data asdzoo_quickstart/synth_t2 [--beats-checkpoint BEATs_iter3_plus_AS2M.pt]

Prepares the ILRMA pseudo-clean cache (reports its real-time factor); without an official checkpoint it
pre-trains a small BEATs on the training audio (BEATs iteration 1, ``asdzoo/configs/beats_pretrain.yaml``);
``--also-random`` also runs the chain from random BEATs weights. Trains the teacher then the student with the
paper's settings (BEATs size aside), keeps the student epoch with the best development score (System 2) and
prints the official DCASE table of the untrained student, the teacher (near channel) and the student.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L

from asdzoo.callbacks import DevSetSelection
from asdzoo.data.pseudo_clean import prepare_pseudo_clean
from asdzoo.data.task2 import Task2DataModule
from asdzoo.encoders.beats_pretrain import BEATsPretrainer
from asdzoo.hub import save_pretrained
from asdzoo.metrics.task2 import evaluate_scores, format_table, truth_from_data_root
from asdzoo.systems.beats_distill import BeatsDistillStudent, BeatsDistillTeacher
from asdzoo.tasks.task2 import score_root

SMALL_BEATS = dict(  # 4 layers, 128-d: pre-training costs 0.63 s per step of 16 six-second views on 2 cores
    encoder_layers=4, encoder_embed_dim=128, encoder_ffn_embed_dim=512, encoder_attention_heads=4, embed_dim=256
)


def train(model, dm, epochs: int, every: int | None) -> None:
    """``every``: development-set selection every so many epochs (the student, System 2); None keeps the last."""
    selection = DevSetSelection(every_n_epochs=every) if every else None
    L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
        callbacks=[selection] if selection else [],
        limit_val_batches=0,
    ).fit(model, dm)
    if selection is None:
        return
    history = ", ".join(f"{e + 1}: {s:.4f}" for e, s in selection.history)
    print(f"{type(model).__name__}: dev official score by epoch {history}; kept epoch {selection.best_epoch + 1}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/bench_beats_distill")
    ap.add_argument("--beats-checkpoint")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--student-epochs", type=int, default=6)
    ap.add_argument("--dev-every", type=int, default=2, help="epochs between development-set evaluations")
    ap.add_argument("--also-random", action="store_true", help="also run the chain from random BEATs weights")
    ap.add_argument("--segment", type=float, default=12.0)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    pc = prepare_pseudo_clean(args.data, workers=2)
    rtf = pc["rtf_per_core"]
    print(f"pseudo-clean: {pc['written']} files, real-time factor {rtf} per core ({time.time() - t0:.0f} s)")
    dm = Task2DataModule(  # as in asdzoo/configs/beats_distill_*.yaml
        args.data,
        batch_size=args.batch_size,
        segment_seconds=args.segment,
        pseudo_clean_root=pc["out"],
        target_oversample=10.0,
    )
    runs = {"official": args.beats_checkpoint} if args.beats_checkpoint else {}
    if not args.beats_checkpoint:
        t1 = time.time()
        L.seed_everything(0)
        pretrainer = BEATsPretrainer(beats=SMALL_BEATS, fbank_window="hamming")
        unlabelled = Task2DataModule(args.data, batch_size=args.batch_size, segment_seconds=args.segment, class_by=None)
        L.Trainer(max_epochs=args.pretrain_epochs, logger=False, enable_checkpointing=False).fit(pretrainer, unlabelled)
        runs["pretrained"] = str(pretrainer.export(out / "beats_pretrained.safetensors"))
        if args.also_random:
            runs["random"] = None
        print(f"BEATs pre-training: {args.pretrain_epochs} epochs in {time.time() - t1:.0f} s")
    for label, checkpoint in runs.items():
        run_chain(label, checkpoint, dm, args, out / label)
    print(f"\ntotal {time.time() - t0:.0f} s")


def run_chain(label: str, checkpoint: str | None, dm, args, out: Path) -> None:
    common = dict(beats=None if checkpoint else SMALL_BEATS, beats_checkpoint=checkpoint, segment_seconds=args.segment)
    L.seed_everything(0)
    teacher = BeatsDistillTeacher(**common)
    train(teacher, dm, args.teacher_epochs, None)  # the paper fixes the teacher after stage 1
    save_pretrained(teacher, out / "teacher")
    untrained = BeatsDistillStudent(teacher=str(out / "teacher"), **common)
    untrained.setup("fit")  # starts from the teacher, as training would
    student = BeatsDistillStudent(teacher=str(out / "teacher"), **common)
    train(student, dm, args.student_epochs, args.dev_every)
    save_pretrained(student, out / "student", name="beats-distill")
    truth = truth_from_data_root(args.data)
    for name, model in (("untrained", untrained), ("teacher", teacher), ("student", student)):
        score_root(model, args.data, out / "scores" / name, progress=False, log=lambda *_: None)
        print(f"\n== BEATs {label}: {name}\n" + format_table(evaluate_scores(out / "scores" / name, truth)))


if __name__ == "__main__":
    main()

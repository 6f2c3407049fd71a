"""Longer CPU run of beats-distill on the built-in synthetic set: teacher-only vs student official scores.

    python benchmarks/beats_distill.py --data asdzoo_quickstart/synth_t2 [--beats-checkpoint BEATs_iter3_plus_AS2M.pt]

Prepares the ILRMA pseudo-clean cache (reports its real-time factor), trains the teacher then the student with
the paper's settings except the BEATs size when no checkpoint is given (then a small random-init BEATs, loudly),
scores every machine with each model (cosine k=1 kNN) and prints the official DCASE table for both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L

from asdzoo.audio.separation import prepare_pseudo_clean
from asdzoo.data.task2 import Task2DataModule
from asdzoo.hub import save_pretrained
from asdzoo.metrics.task2 import evaluate_scores, format_table, truth_from_data_root
from asdzoo.pipeline import score_root
from asdzoo.systems.beats_distill import BeatsDistillStudent, BeatsDistillTeacher

SMALL_BEATS = dict(
    encoder_layers=4, encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_attention_heads=4, embed_dim=256
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/bench_beats_distill")
    ap.add_argument("--beats-checkpoint")
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--student-epochs", type=int, default=5)
    ap.add_argument("--segment", type=float, default=12.0)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    pc = prepare_pseudo_clean(args.data, workers=2)
    print(
        f"pseudo-clean: {pc['written']} files, real-time factor {pc['rtf_per_core']} per core "
        f"({time.time() - t0:.0f} s)"
    )
    common = dict(
        beats=None if args.beats_checkpoint else SMALL_BEATS,
        beats_checkpoint=args.beats_checkpoint,
        segment_seconds=args.segment,
    )
    dm = Task2DataModule(
        args.data,
        batch_size=args.batch_size,
        segment_seconds=args.segment,
        pseudo_clean_root=pc["out"],
        target_oversample=10.0,
    )
    L.seed_everything(0)
    teacher = BeatsDistillTeacher(**common)
    L.Trainer(max_epochs=args.teacher_epochs, accelerator="auto", logger=False, enable_checkpointing=False).fit(
        teacher, dm
    )
    save_pretrained(teacher, out / "teacher")
    student = BeatsDistillStudent(teacher=str(out / "teacher"), **common)
    L.Trainer(max_epochs=args.student_epochs, accelerator="auto", logger=False, enable_checkpointing=False).fit(
        student, dm
    )
    save_pretrained(student, out / "student", name="beats-distill")
    truth = truth_from_data_root(args.data)
    for name, model in (("teacher-only (near channel)", teacher), ("student", student)):
        score_root(model, args.data, out / "scores" / name.split()[0], progress=False, log=lambda *_: None)
        print(f"\n== {name}\n" + format_table(evaluate_scores(out / "scores" / name.split()[0], truth)))
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""multistream (paper 002) on the built-in suite: the two streams that train offline (BEATs LoRA r16 and r32 on a
BEATs self-pre-trained on the suite's own training audio, the stand-in for BEATs_iter3_plus_AS2M), each alone and
fused with the paper's relative weights (0.23 : 0.15), with and without rank normalisation and MemMixup (the paper's
ablation, on our data); then embedding throughput and peak memory of every full-size stream (random weights; the
peak resident memory of a fresh process that built the stream and embedded, and how much of it inference added).

    python benchmarks/multistream.py --preset dcase --seeds 11 12 13 [--quick] [--skip-scores | --skip-throughput]

Sizes are reduced for 2 CPU cores and stated in the output: a tiny BEATs (2 layers, 64-d), 3 s training crops.
Data seeds default to ones no test or default was tuned on.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import lightning as L
import numpy as np
import torch
from encoders import _rss_mib

from asdzoo.data.synth import SynthConfig, generate
from asdzoo.data.task2 import Task2DataModule, list_machines
from asdzoo.encoders.beats_pretrain import BEATsPretrainer
from asdzoo.metrics.task2 import official_score, section_metrics
from asdzoo.scoring.memmixup import MixupBank
from asdzoo.scoring.rank import rank_normalise
from asdzoo.systems.multistream import ContrastiveStream
from asdzoo.tasks.task2 import all_clips, clip_batches, load_machine

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
TINY_BEATS = dict(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4)
STREAMS = {"beats-r16": dict(lora_rank=16, lora_alpha=32), "beats-r32": dict(lora_rank=32, lora_alpha=64)}
FUSION = {"beats-r16": 0.23 / 0.38, "beats-r32": 0.15 / 0.38}  # the MEF6 weights of the two streams, renormalised
FULL_SIZE = {
    "clap": dict(kind="clap"),
    "wavlm": dict(kind="wavlm"),
    "beats-r16": dict(kind="beats", lora_rank=16, lora_alpha=32),
    "beats-r32": dict(kind="beats", lora_rank=32, lora_alpha=64),
    "clap-lora": dict(kind="clap_lora", lora_rank=8, lora_alpha=16),
    "ast": dict(kind="ast"),
}


def pretrain_beats(root: Path, out: Path, epochs: int, seed: int) -> Path:
    """BEATs iteration 1 on the suite's normal training clips (as the beats-distill README chain does)."""
    L.seed_everything(seed, verbose=False)
    model = BEATsPretrainer(beats=dict(TINY_BEATS, embed_dim=128), fbank_window="hamming")
    data = Task2DataModule(str(root), batch_size=8, segment_seconds=2.0, class_by=None)
    L.Trainer(accelerator="cpu", max_epochs=epochs, limit_val_batches=0, **QUIET).fit(model, data)
    return model.export(out)


def train_stream(root: Path, checkpoint: Path, lora: dict, epochs: int, seed: int) -> ContrastiveStream:
    """The stream's LightningCLI recipe at tiny size: 10 % held out, early stopping on val/spread (patience 3)."""
    L.seed_everything(seed, verbose=False)
    model = ContrastiveStream(kind="beats", checkpoint=str(checkpoint), lora_blocks=2, **lora)
    data = Task2DataModule(str(root), batch_size=32, segment_seconds=3.0, class_by=None, val_fraction=0.1)
    stop = L.pytorch.callbacks.EarlyStopping("val/spread", mode="max", patience=3)
    L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[stop], num_sanity_val_steps=0, **QUIET).fit(model, data)
    return model


def official_scores(streams: dict[str, ContrastiveStream], root: Path) -> dict[str, float]:
    """Official score of each stream and of their fusion, for every (MemMixup, rank normalisation) combination."""
    triplets: dict[str, list[float]] = {}
    for machine in list_machines(root):
        data = load_machine(root, machine)
        train = all_clips(data.train, data.channels)
        train_domains = np.array([int(c.domain == "target") for c in data.train])
        test_domains = np.array([int(c.domain == "target") for c in data.test])
        labels = [int(c.meta.is_anomaly) for c in data.test]
        emb = {}
        for name, s in streams.items():
            test = [s.embed(b["wave"], b["lengths"]) for b in clip_batches(data.test, data.channels)]
            emb[name] = (s.embed(train["wave"], train["lengths"]).numpy(), torch.cat(test).numpy())
        for mixup in (True, False):
            raw = {n: MixupBank(tr, train_domains, mixup=mixup).score(te) for n, (tr, te) in emb.items()}
            for ranked in (True, False):
                per = {n: rank_normalise(r, test_domains) if ranked else r for n, r in raw.items()}
                per["fused r16 + r32"] = sum(w * per[n] for n, w in FUSION.items())
                for name, scores in per.items():
                    m = section_metrics(labels, scores, test_domains)
                    key = f"{name:16s} MemMixup {'on ' if mixup else 'off'}  rank norm {'on ' if ranked else 'off'}"
                    triplets.setdefault(key, []).extend([m["AUC (source)"], m["AUC (target)"], m["pAUC"]])
    return {k: official_score(t) for k, t in triplets.items()}


def _throughput(args) -> dict:
    name, batch, repeats = args
    torch.manual_seed(0)
    stream = ContrastiveStream(encoder_config={}, batch_size=batch, **FULL_SIZE[name]).eval()
    wave = torch.randn(batch, 160000) * 0.1
    base = _rss_mib()
    stream.embed(wave)  # warm-up at the measured shape
    t0 = time.perf_counter()
    for _ in range(repeats):
        stream.embed(wave)
    rate = batch * repeats / (time.perf_counter() - t0)
    return dict(clips_per_s=rate, peak_mib=_rss_mib(), inference_mib=_rss_mib() - base)


def throughput(batch: int, repeats: int) -> None:
    print(f"\nfull-size streams, 10 s clips, batch {batch}, CPU threads {torch.get_num_threads()} (random weights)")
    print(f"{'stream':<11}{'trainable':>11}{'clips/s':>9}{'peak RSS MiB':>14}{'above loaded model':>20}")
    for name, kwargs in FULL_SIZE.items():
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: the peak memory is this stream's alone
            r = pool.apply(_throughput, ((name, batch, repeats),))
        n = sum(p.numel() for p in ContrastiveStream(encoder_config={}, **kwargs).parameters() if p.requires_grad)
        print(f"{name:<11}{n:>11,}{r['clips_per_s']:9.2f}{r['peak_mib']:14.0f}{r['inference_mib']:20.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="dcase")
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    p.add_argument("--quick", action="store_true", help="2 machines, fewer epochs (a smoke run)")
    p.add_argument("--skip-scores", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    pre_epochs, epochs = (10, 3) if args.quick else (40, 15)
    rows: dict[str, list[float]] = {}
    if not args.skip_scores:
        print(f"tiny BEATs {TINY_BEATS}: pre-trained {pre_epochs} epochs; LoRA on both blocks, <= {epochs} epochs")
        with TemporaryDirectory() as tmp:
            for seed in args.seeds:
                extra = dict(machines=("fan", "valve")) if args.quick else {}
                cfg = SynthConfig.from_preset(args.preset, seed=seed, **extra)
                root = generate(Path(tmp) / f"s{seed}", cfg, workers=2, progress=False)
                t0 = time.time()
                beats = pretrain_beats(root, Path(tmp) / f"beats{seed}.safetensors", pre_epochs, seed)
                L.seed_everything(seed, verbose=False)
                streams = {"untrained head": ContrastiveStream(kind="beats", checkpoint=str(beats))}
                streams |= {n: train_stream(root, beats, lora, epochs, seed) for n, lora in STREAMS.items()}
                print(f"seed {seed}: pre-training and two streams in {time.time() - t0:.0f} s")
                for key, value in official_scores(streams, root).items():
                    rows.setdefault(key, []).append(value)
        print(f"\nofficial score (%) on preset {args.preset!r}, seeds {args.seeds}")
        for name, values in rows.items():
            v = 100 * np.array(values)
            print(f"{name}  " + " / ".join(f"{x:.2f}" for x in v) + f"   mean {v.mean():.2f}, spread {np.ptp(v):.2f}")
    if not args.skip_throughput:
        throughput(batch=4, repeats=1 if args.quick else 2)


if __name__ == "__main__":
    main()

"""What paper 003's Qwen2-Audio teacher costs a training step, on CPU, measured in one run.

    python benchmarks/s5_distill.py            # tiny tagger + tiny teacher steps, then the full-size teacher estimate
    python benchmarks/s5_distill.py --quick    # fewer repeats, 2 full-width layers

1. One optimiser step of a tiny 1c tagger (M2D 64-d, 2 blocks; batch 16 of 2 s scenes) as the plain S5Tagger, as the
   QwenDistillTagger with a tiny random teacher (64-d, 2 layers), cache missed and cache hit, and as MaskedSDTagger;
   ratios to the plain step.
2. The real teacher (the audio tower of Qwen/Qwen2-Audio-7B: d_model 1280, 32 layers, 20 heads, ffn 5120, 1500
   positions = 30 s padded input): its parameter count from the config on the meta device, a FLOP count per clip,
   and the CPU time per clip measured on ``--layers`` full-width layers and scaled to 32 (the convolutional stem is
   measured once, the layers scale linearly). Every clip costs the full 30 s of padded positions, whatever its
   length: the encoder only accepts 3000 mel frames.
CI does not run this.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from asdzoo.encoders.qwen2_audio import Qwen2AudioTeacher, random_qwen2_audio_encoder
from asdzoo.nn.pit import tagger_pit_loss
from asdzoo.systems.s5_baseline import S5Tagger
from asdzoo.systems.s5_distill import MaskedSDTagger, QwenDistillTagger

TAGGER = dict(m2d=dict(embed_dim=64, depth=2, num_heads=4), track_in=64, track_hidden=32)
TINY_QWEN = dict(
    d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=128,
    max_source_positions=100,
)  # fmt: skip
# Qwen/Qwen2-Audio-7B config.json, audio_config (the Whisper-large-v3 sized encoder)
FULL_QWEN = dict(
    d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128,
    max_source_positions=1500,
)  # fmt: skip


def batch(n: int = 16, seconds: float = 2.0) -> dict:
    g = torch.Generator().manual_seed(0)
    samples = int(32000 * seconds)
    return {
        "mixture": torch.randn(n, 4, samples, generator=g) * 0.1,
        "dry_sources": torch.randn(n, 3, samples, generator=g) * 0.1,
        "classes": torch.randint(0, 19, (n, 3), generator=g),
    }


def step_seconds(model, data: dict, repeats: int, fresh_inputs: bool) -> float:
    """Median time of forward + backward + AdamW step; ``fresh_inputs``: new dry sums each time (cache misses)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for i in range(repeats + 1):
        if fresh_inputs:
            data = dict(data, dry_sources=data["dry_sources"] + 1e-3 * (i + 1))
        start = time.perf_counter()
        if isinstance(model, QwenDistillTagger):
            terms, _ = model.losses(data)
            loss = terms["task"] + 0.05 * terms["cka"] + 0.02 * terms["cos"]
        elif isinstance(model, MaskedSDTagger):
            loss = model.losses(data)["total"]
            model.ema_teacher.update_parameters(model.model)
        else:
            loss = tagger_pit_loss(model(data["mixture"]), data["classes"])[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first call warms up allocators and caches
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def full_size_teacher(layers: int, repeats: int) -> dict:
    with torch.device("meta"):
        full = random_qwen2_audio_encoder(FULL_QWEN)
    params = sum(p.numel() for p in full.parameters())
    tokens, d, ffn, n_layers = 1500, 1280, 5120, 32
    # per layer: QKV + output projections 4 d^2, FFN 2 d ffn multiply-adds per token; attention 2 T^2 d
    per_layer = tokens * (4 * d * d + 2 * d * ffn) + 2 * tokens * tokens * d
    stem = 3000 * 128 * d * 3 + 1500 * d * d * 3  # conv1 (k 3, 128 -> d) at 3000 frames, conv2 (k 3, stride 2)
    flops = 2 * (n_layers * per_layer + stem)
    part = Qwen2AudioTeacher(random_qwen2_audio_encoder(dict(FULL_QWEN, encoder_layers=layers)))
    stem_only = Qwen2AudioTeacher(random_qwen2_audio_encoder(dict(FULL_QWEN, encoder_layers=0)))
    wave = torch.randn(1, 16000 * 10) * 0.1

    def seconds(teacher):
        teacher(wave)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            teacher(wave)
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    t_stem, t_part = seconds(stem_only), seconds(part)
    per_clip = t_stem + (t_part - t_stem) * n_layers / layers
    return dict(params=params, flops=flops, stem_s=t_stem, part_s=t_part, per_clip_s=per_clip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--layers", type=int, default=None, help="full-width teacher layers to time (default 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    data = batch()

    torch.manual_seed(0)
    plain = step_seconds(S5Tagger(channels=1, finetuning_layers="all", **TAGGER), data, repeats, False)
    qwen = QwenDistillTagger(channels=1, teacher=TINY_QWEN, teacher_dim=64, **TAGGER)
    missed = step_seconds(qwen, data, repeats, True)
    hit = step_seconds(qwen, data, repeats, False)
    sd = step_seconds(MaskedSDTagger(channels=1, aux_blocks=(1, 2), **TAGGER), data, repeats, False)
    print(f"tiny 1c tagger, batch 16 x 2 s, {args.threads} threads (median of {repeats} steps):")
    print(f"  plain S5Tagger step           {plain * 1000:8.1f} ms")
    print(f"  Qwen distil, teacher computed {missed * 1000:8.1f} ms  ({missed / plain:.2f} x plain)")
    print(f"  Qwen distil, teacher cached   {hit * 1000:8.1f} ms  ({hit / plain:.2f} x plain)")
    print(f"  cache speed-up of the step    {missed / hit:8.2f} x")
    print(f"  masked SD step (EMA + 2 aux)  {sd * 1000:8.1f} ms  ({sd / plain:.2f} x plain)")

    layers = args.layers or (2 if args.quick else 4)
    full = full_size_teacher(layers, 1 if args.quick else 3)
    print("full-size Qwen2-Audio audio tower (random weights), one 10 s clip (padded to 30 s):")
    print(f"  parameters                    {full['params'] / 1e6:8.1f} M")
    print(f"  forward FLOPs per clip        {full['flops'] / 1e12:8.2f} TFLOP")
    print(f"  stem alone / stem + {layers} layers {full['stem_s']:6.2f} s / {full['part_s']:.2f} s")
    print(f"  32 layers, scaled, per clip   {full['per_clip_s']:8.2f} s")
    print(f"  per batch-16 training step    {16 * full['per_clip_s']:8.1f} s of teacher (cache missed)")


if __name__ == "__main__":
    main()

"""DCASE Task 4 (S5): the contract every separation model meets, and the pipeline that runs any of them.

A model (:class:`SoundSceneSeparator`) takes 4-channel 32 kHz mixtures and returns, per mixture, 3 slot labels (the
18 classes or silence) and 3 dry mono waveforms. The pipeline writes them as the official submission does
(``generate_waveform.py`` of ``nttcslab/dcase2026_task4_baseline``): ``eval_out/<soundscape>_<slot>_<label>.wav`` for
every non-silent slot, and ``eval_results.json`` with each estimate's probability and the model's parameter count;
then scores such a folder against a dev-test root (CAPI-SDRi, label accuracies, per class).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import soundfile as sf
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asdzoo.atomic import atomic_dir, atomic_path
from asdzoo.audio.io import AudioError, read_audio
from asdzoo.data.s5 import MIX_CHANNELS, N_SLOTS, SAMPLE_RATE, SILENCE
from asdzoo.data.task4 import DEV_TEST, DevTestSet, collate_scenes, match_references, pad_labels, scan_dev_test
from asdzoo.metrics.task4 import S5Evaluation

ESTIMATES = "eval_out"
RESULTS_JSON = "eval_results.json"


@runtime_checkable
class SoundSceneSeparator(Protocol):
    """What every Task 4 model offers: ``separate(mixture [B, 4, S])`` -> ``labels`` (B lists of 3 names),
    ``probabilities [B, 3]`` and ``waveforms [B, 3, S]``."""

    def separate(self, mixture: torch.Tensor) -> dict: ...


EVAL_SET = "synthesized/eval"  # the official evaluation set: eval_set/synthesized/eval/soundscape/eval_NNNN.wav


def soundscape_folder(data_root: str | Path) -> Path:
    """The folder holding ``soundscape/``: a dev root (``synthesized/test``), an eval root (``synthesized/eval``) or
    that folder itself."""
    root = Path(data_root)
    for candidate in (root / DEV_TEST, root / EVAL_SET, root):
        if (candidate / "soundscape").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root}: no soundscape/ folder (expected {root}/{DEV_TEST}/soundscape/*.wav or {root}/{EVAL_SET}/soundscape)"
    )


def _check_output(out: Path, data_root: Path) -> None:
    """``out`` is replaced as a whole: refuse anything that is not a previous submission, and the data itself."""
    out, data = out.absolute(), data_root.absolute()
    if out == data or data.is_relative_to(out) or out.is_relative_to(data):
        raise ValueError(f"{out}: the output folder must lie outside the data ({data}), it is replaced as a whole")
    if out.exists() and not ((out / RESULTS_JSON).is_file() or (out / ESTIMATES).is_dir()):
        raise ValueError(f"{out}: exists and is not a previous submission folder; choose a new --out")


def parameter_count(model) -> int:
    """Parameters as the official submission counts them: asdzoo keeps ResUNetK's fixed STFT kernels as buffers,
    torchlibrosa as (frozen) parameters."""
    from asdzoo.nn.resunetk import AnalyticBuffers

    kernels = sum(b.numel() for m in model.modules() if isinstance(m, AnalyticBuffers) for b in m.buffers())
    return sum(p.numel() for p in model.parameters()) + kernels


def separate_root(model, data_root: str | Path, out: str | Path, batch_size: int = 1, progress: bool = True) -> Path:
    """Separate every mixture of ``data_root`` and write the submission folder ``out`` atomically."""
    if not isinstance(model, SoundSceneSeparator):
        raise ValueError(f"{type(model).__name__} is not a Task 4 model (it has no separate())")
    _check_output(Path(out), Path(data_root))
    dataset = DevTestSet(soundscape_folder(data_root), references=False)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_scenes)
    results = []
    with atomic_dir(out) as tmp:
        (tmp / ESTIMATES).mkdir()
        for batch in tqdm(loader, desc="separate", unit="batch", disable=not progress):
            output = model.separate(batch["mixture"])
            for name, labels, probs, waves in zip(
                batch["names"], output["labels"], output["probabilities"], output["waveforms"]
            ):
                estimates = []
                for slot, (label, prob, wave) in enumerate(zip(labels, probs.tolist(), waves)):
                    if label == SILENCE:
                        continue
                    filename = f"{name}_{slot}_{label}.wav"
                    sf.write(tmp / ESTIMATES / filename, wave.cpu().numpy(), SAMPLE_RATE, subtype="FLOAT")
                    estimates.append({"filename": filename, "label": label, "probability": prob})
                results.append({"soundscape": name, "estimate": estimates})
        summary = {"nparams": parameter_count(model), "probabilities": results}
        (tmp / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
    return Path(out)


def _estimates(folder: Path, names: list[str]) -> dict[str, list[tuple[Path, str]]]:
    estimates = folder / ESTIMATES if (folder / ESTIMATES).is_dir() else folder
    files = list(estimates.glob("*.wav"))
    if not files and not (folder / RESULTS_JSON).is_file():
        raise FileNotFoundError(f"{folder}: no separated sources ({ESTIMATES}/<soundscape>_<slot>_<label>.wav)")
    return match_references(names, files)


def evaluate_separation(estimates: str | Path, data_root: str | Path) -> dict:
    """CAPI-SDRi and label accuracies of a submission folder against the dev-test references of ``data_root``."""
    scenes = scan_dev_test(soundscape_folder(data_root), references=True)
    found = _estimates(Path(estimates), [s.name for s in scenes])
    evaluation = S5Evaluation()
    for scene in tqdm(scenes, desc="evaluate", unit="mixture"):
        mixture = read_audio(scene.mixture, channels=MIX_CHANNELS, sample_rate=SAMPLE_RATE)
        length = mixture.shape[-1]
        refs = [_same_length(p, length) for p in scene.references]
        ests = [_same_length(p, length) for p, _ in found[scene.name]]
        ref_labels, est_labels = pad_labels(list(scene.labels)), pad_labels([label for _, label in found[scene.name]])
        evaluation.update(est_labels, _slots(ests, length), ref_labels, _slots(refs, length), mixture[0])
    return evaluation.compute()


def _same_length(path: Path, length: int) -> torch.Tensor:
    wave = read_audio(path, channels=1, sample_rate=SAMPLE_RATE)[0]
    if wave.shape[-1] != length:
        raise AudioError(path, f"has {wave.shape[-1]} samples, its mixture {length}")
    return wave


def _slots(waves: list[torch.Tensor], length: int) -> torch.Tensor:
    """Waveforms zero-padded into the 3 slots ``[3, length]`` (silence = zeros)."""
    out = torch.zeros(N_SLOTS, length)
    for k, wave in enumerate(waves):
        out[k, : wave.shape[-1]] = wave
    return out


def write_result_csv(result: dict, path: str | Path) -> None:
    """One row per class, then the totals (``ALL``), atomically."""
    fields = ["label", "n_ref", "n_est", "tp", "fp", "fn", "capi_sdri", "sdri_matched"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*fields, "accuracy_mixture", "accuracy_source"])
        writer.writeheader()
        for row in result["per_class"]:
            writer.writerow({k: row.get(k) for k in fields})
        writer.writerow(
            {
                "label": "ALL",
                "capi_sdri": result["capi_sdri"],
                "accuracy_mixture": result["accuracy_mixture"],
                "accuracy_source": result["accuracy_source"],
            }
        )


def format_result(result: dict) -> str:
    """The per-class table and the three official numbers, for the terminal."""

    def num(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [f"{'class':<18} {'refs':>5} {'ests':>5} {'TP':>4} {'FP':>4} {'FN':>4} {'CAPI-SDRi':>10}"]
    for row in result["per_class"]:
        lines.append(
            f"{row['label']:<18} {row['n_ref']:>5} {row['n_est']:>5} {row['tp']:>4} {row['fp']:>4} {row['fn']:>4} "
            f"{num(row['capi_sdri']):>10}"
        )
    lines.append(
        f"CAPI-SDRi {num(result['capi_sdri'])} dB | accuracy (mixture) {num(result['accuracy_mixture'])} % | "
        f"accuracy (source) {num(result['accuracy_source'])} %  over {result['n_scored']} of "
        f"{result['n_mixtures']} mixtures"
    )
    return "\n".join(lines)

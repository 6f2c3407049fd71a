"""Every data-dependent pass mark of the suite, set from values measured on several seeds of the tests' data.

A detection test calls ``check(name, value)``. The mark is ``min(measured) - MARGIN`` for a value that must be high
(``max(measured) + MARGIN`` for one that must be low), so no mark sits near a single lucky measurement, and every
mark must still be clearly better than what an untrained or random system gets (``chance``, checked by
``tests/test_thresholds.py``): a test that passes below chance would prove nothing.

To re-measure after changing the generator or a system (about 6 minutes per seed on 2 cores):
``python scripts/measure_test_thresholds.py --seeds 0 1 2 3`` prints, per name, the values to paste below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

MARGIN = 0.05  # absolute (AUCs, accuracies); for ratios the same 0.05 of the ratio
SEEDS = (0, 1, 2, 3)  # ASDZOO_TEST_SEED values the ``measured`` tuples come from, in this order


@dataclass(frozen=True)
class Mark:
    measured: tuple[float, ...]  # one value per seed in SEEDS
    chance: float  # what an untrained/random system scores: the mark must be clearly better
    higher_is_better: bool = True
    margin: float = MARGIN  # in the value's own unit (counts need their own)

    @property
    def threshold(self) -> float:
        if self.higher_is_better:
            return round(min(self.measured) - self.margin, 3)
        return round(max(self.measured) + self.margin, 3)

    def passes(self, value: float) -> bool:
        return value > self.threshold if self.higher_is_better else value < self.threshold


AUC = 0.5  # chance for AUCs and the official score (an hmean of AUCs and McClish-standardised pAUCs)
RATIO = 1.0  # a loss or error ratio after / before training: 1 = nothing learnt

MARKS: dict[str, Mark] = {
    # synthetic data (tests/test_synth_and_data.py); chance = a far mic that hears what the near mic hears
    "synth: lowest near / far level ratio": Mark((2.4151, 2.2083, 2.1885, 2.3988), chance=1.0),
    "synth: highest near-far correlation": Mark((0.4651, 0.5284, 0.4653, 0.5092), chance=1.0, higher_is_better=False),
    # GenRep (tests/test_genrep.py, tests/test_cli.py)
    "genrep logmel near_only: AUC (all)": Mark((0.9575, 0.9325, 0.8300, 0.9050), chance=AUC),
    "genrep logmel near_only: AUC (source)": Mark((0.9250, 0.8850, 1.0000, 0.8200), chance=AUC),
    "genrep logmel sfsoft_a05f07: AUC (all)": Mark((0.9625, 0.9150, 0.8300, 0.9100), chance=AUC),
    "genrep logmel sfsoft_a05f07: AUC (source)": Mark((0.9400, 0.8550, 1.0000, 0.8400), chance=AUC),
    "genrep aisfx near_only: AUC (all)": Mark((0.9975, 0.9475, 0.9900, 0.9850), chance=AUC),
    "genrep aisfx near_only: AUC (source)": Mark((0.9950, 0.8950, 1.0000, 0.9700), chance=AUC),
    "genrep logmel absdif_0.5: AUC (all)": Mark((0.7225, 0.6275, 0.6125, 0.6850), chance=AUC),
    "genrep logmel rdpgem ldn valve: AUC (all)": Mark((0.7875, 0.7450, 0.7950, 0.8150), chance=AUC),
    "cli genrep-logmel: official score": Mark((0.7732, 0.7253, 0.7460, 0.8002), chance=AUC),
    "cli genrep-logmel: worst machine's AUC (source)": Mark((0.6700, 0.6050, 0.8200, 0.7150), chance=AUC),
    "search logmel: best worst-case official score": Mark((0.7932, 0.7994, 0.8010, 0.7770), chance=AUC),
    # aum-poe, tiny stage-1 Audio-Mamba + 10 stage-2 epochs, kNN scoring (tests/test_aum_poe.py)
    "aum-poe fan: AUC (all)": Mark((0.8975, 0.8700, 0.9300, 0.7525), chance=AUC),
    # its stage-1 validation (tests/test_aum_poe.py): 2 machine types; chance = an untrained backbone
    "aum-poe stage 1: machine-type accuracy of held-out normals": Mark((1.0, 1.0, 1.0, 1.0), chance=0.5),
    "aum-poe stage 1: held-out cross-entropy, untrained minus trained": Mark(
        (0.9199, 0.8747, 0.9024, 0.8491), chance=0.0
    ),
    # multistream: LoRA over the tiny pre-trained BEATs, 20 contrastive epochs, MemMixup kNN, transductive ranks
    "multistream beats stream: mean AUC of fan and valve": Mark((0.7175, 0.6375, 0.7300, 0.6650), chance=AUC),
    "multistream: NT-Xent on a fixed batch, after / before 15 epochs": Mark(
        (0.7339, 0.6767, 0.7525, 0.5660), chance=RATIO, higher_is_better=False
    ),
    # DCASE autoencoder baseline, 100 epochs (tests/test_ae_baseline.py, tests/test_cli.py)
    "ae mse: train error after / before": Mark((0.0400, 0.0367, 0.0670, 0.0339), chance=RATIO, higher_is_better=False),
    "ae mse fan: AUC (source)": Mark((0.7250, 0.8050, 0.7050, 0.7150), chance=AUC),
    "ae mahalanobis fan: AUC (source)": Mark((1.0000, 0.9950, 1.0000, 0.9500), chance=AUC),
    "cli dcase-ae-mse: fan AUC (source)": Mark((0.7250, 0.8050, 0.7050, 0.7150), chance=AUC),
    # BEATs pre-training (tests/test_beats_pretrain.py); a collapsed tokenizer would use one code
    "beats tokenizer: distinct codes on 8 fan clips": Mark((82.0, 89.0, 84.0, 77.0), chance=1.0, margin=10.0),
    "beats pretrain: masked-prediction loss after / before": Mark(
        (0.3935, 0.4150, 0.4108, 0.4229), chance=RATIO, higher_is_better=False
    ),
    "beats pretrain: masked-prediction accuracy": Mark((0.4115, 0.3542, 0.3767, 0.3611), chance=1 / 1024),
    "beats pretrained tokens: AUC": Mark((0.7225, 0.6900, 0.7462, 0.6725), chance=AUC),
    "beats pretrained tokens: AUC gain over random weights": Mark((0.2562, 0.1287, 0.1550, 0.2350), chance=0.0),
    # beats-distill (tests/test_beats_distill.py); 10 attribute classes
    "beats-distill student: KD loss after / before": Mark(
        (0.1072, 0.1312, 0.1266, 0.1541), chance=RATIO, higher_is_better=False
    ),
    "beats-distill student: mean pooled AUC of fan and valve": Mark((0.6525, 0.7713, 0.7863, 0.6850), chance=AUC),
    "beats-distill student: official score": Mark((0.6243, 0.7005, 0.7259, 0.6739), chance=AUC),
    "beats-distill student: attribute accuracy on test normals": Mark((0.7250, 0.7750, 0.7500, 0.7750), chance=0.1),
    # Task 4 baseline on the small built-in FOA set (tests/test_s5_training.py); chance = the untrained models
    # (source-level accuracy 0.087 on seed 0: random labels; SNRi gain 0 by definition)
    "s5 tagger: source-level accuracy on validation scenes": Mark((0.2923, 0.2200, 0.1972, 0.2239), chance=0.09),
    "s5 tagger: accuracy gain over untrained": Mark((0.2049, 0.1830, 0.1706, 0.1230), chance=0.0),
    "s5 separator: SNRi gain over untrained (dB)": Mark((1.0171, 1.2497, 1.6012, 0.8353), chance=0.0, margin=0.3),
    # the 4-channel tagger (M2dAtSpatial) fitting 32 fixed training scenes, 15 epochs; chance = untrained (0.027-0.038)
    "s5 4c tagger: source-level accuracy on its training scenes": Mark((0.8148, 0.9259, 0.9149, 0.8644), chance=0.04),
    "s5 4c tagger: PIT loss after / before": Mark(
        (0.1028, 0.1285, 0.0442, 0.1284), chance=RATIO, higher_is_better=False
    ),
    # paper 003's distillation taggers vs the plain tagger, 300 steps each (tests/test_s5_distill.py); chance for the
    # differences = an untrained tagger minus the trained baseline (measured: -0.045, -0.163, -0.199, -0.139)
    "s5 qwen: 1 - CKA last / first epoch": Mark((0.8270, 0.8054, 0.7824, 0.7509), chance=RATIO, higher_is_better=False),
    "s5 qwen: cosine distance last / first epoch": Mark(
        (0.2038, 0.2037, 0.2372, 0.2211), chance=RATIO, higher_is_better=False
    ),
    "s5 masked SD: L_aux last / first epoch": Mark(
        (0.1041, 0.1329, 0.1077, 0.1208), chance=RATIO, higher_is_better=False
    ),
    "s5 masked SD: L_self last epoch, with / without its term": Mark(
        (0.3724, 0.5397, 0.4906, 0.6171), chance=RATIO, higher_is_better=False
    ),
    "s5 qwen: source-level accuracy on validation scenes": Mark((0.2778, 0.2292, 0.2029, 0.3188), chance=0.09),
    "s5 masked SD: source-level accuracy on validation scenes": Mark((0.3594, 0.2245, 0.1972, 0.2338), chance=0.09),
    "s5 qwen: accuracy minus the baseline tagger's (same steps)": Mark(
        (0.1454, 0.0292, -0.0221, 0.0794), chance=-0.136
    ),
    "s5 masked SD: accuracy minus the baseline tagger's (same steps)": Mark(
        (0.2270, 0.0245, -0.0278, -0.0056), chance=-0.136
    ),
}


def check(name: str, value: float) -> None:
    """Assert ``value`` clears the mark ``name``. With ``ASDZOO_RECORD_MARKS=file`` (measuring, see
    ``scripts/measure_test_thresholds.py``) append the value there as a JSON line instead of asserting, so that one
    test's later values are still measured."""
    record = os.environ.get("ASDZOO_RECORD_MARKS")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"name": name, "seed": test_seed(), "value": float(value)}) + "\n")
        return
    mark = MARKS[name]
    assert mark.passes(value), f"{name}: {value:.4f} vs mark {mark.threshold} (measured {mark.measured})"


def test_seed() -> int:
    """Seed of the tests' synthetic data (``ASDZOO_TEST_SEED``, default 0)."""
    return int(os.environ.get("ASDZOO_TEST_SEED", "0"))


test_seed.__test__ = False  # a helper, not a test

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from asdzoo.metrics.task4 import LabelCount, S5Evaluation, capi_sdri_sample, label_accuracy, label_counts

from reference import reference_dir

TOL_DB = 1e-3


@pytest.fixture(scope="module")
def reference():
    folder = reference_dir("capi_sdri")
    expected = json.loads((folder / "capi_sdri_expected.json").read_text())
    return expected, load_file(folder / "capi_sdri_cases.safetensors")


def _waves(wav, index):
    return wav[f"case{index:02d}_est"], wav[f"case{index:02d}_ref"], wav[f"case{index:02d}_mixture"]


def test_every_reference_case(reference):
    expected, wav = reference
    assert len(expected["cases"]) == 14
    for case in expected["cases"]:
        est, ref, mixture = _waves(wav, case["index"])
        got = capi_sdri_sample(case["est_labels"], est, case["ref_labels"], ref, mixture)
        if case["capi_sdri"] is None:
            assert got is None, case["name"]
            continue
        assert abs(got.value - case["capi_sdri"]) < TOL_DB, case["name"]
        assert set(got.classes) == set(case["per_class"]), case["name"]
        for label, want in case["per_class"].items():
            score = got.classes[label]
            assert score.improvements == pytest.approx(want["metric_i"], abs=TOL_DB), (case["name"], label)
            if want["type"] == "pi":
                assert (score.n_est, score.n_ref) == (want["n_est"], want["n_ref"])
                assert score.snr == pytest.approx(want["snr_best_perm"], abs=TOL_DB), (case["name"], label)
                assert list(score.est_perm) == want["est_perm_local"], (case["name"], label)
                assert list(score.ref_perm) == want["ref_perm_local"], (case["name"], label)
            else:
                assert want["type"] == ("all_FP" if score.n_ref == 0 else "all_FN")
                assert score.est_perm == score.ref_perm == ()


def test_pairing_is_chosen_by_snr_not_snri(reference):
    expected, wav = reference
    case = expected["cases"][12]
    assert case["name"] == "same_class_select_by_snr"
    est, ref, mixture = _waves(wav, 12)
    got = capi_sdri_sample(case["est_labels"], est, case["ref_labels"], ref, mixture)
    assert abs(got.value - case["capi_sdri"]) < TOL_DB
    assert abs(got.value - case["alt_if_selected_by_snri"]) > 1.0
    assert got.classes["Speech"].matched_improvements == pytest.approx(case["snri_vs_each_speech_ref"][:1], abs=TOL_DB)


def test_dataset_mean_over_non_none_mixtures(reference):
    expected, wav = reference
    evaluation = S5Evaluation()
    for case in expected["cases"]:
        est, ref, mixture = _waves(wav, case["index"])
        evaluation.update(case["est_labels"], est, case["ref_labels"], ref, mixture)
    result = evaluation.compute()
    assert (result["n_mixtures"], result["n_scored"]) == (14, 13)
    assert abs(result["capi_sdri"] - expected["mean_over_non_none_cases"]) < TOL_DB


def test_channel_zero_of_multichannel_signals_is_scored(reference):
    expected, wav = reference
    case = expected["cases"][4]
    est, ref, mixture = _waves(wav, 4)
    noise = torch.randn(3, 3, est.shape[-1], generator=torch.Generator().manual_seed(0))
    got = capi_sdri_sample(
        case["est_labels"],
        torch.cat([est[:, None], noise], dim=1),
        case["ref_labels"],
        torch.cat([ref[:, None], noise], dim=1),
        torch.stack([mixture, noise[0, 0], noise[1, 0], noise[2, 0]]),
    )
    assert abs(got.value - case["capi_sdri"]) < TOL_DB


def _scaled(ref: torch.Tensor, error_gain: float) -> torch.Tensor:
    """An estimate whose error is ``error_gain * ref``: SNR = -20 log10(error_gain) exactly."""
    return ref * (1.0 - error_gain)


def test_per_class_rows_against_closed_form():
    t = 1000
    speech, dishes = torch.ones(t), torch.linspace(-1.0, 1.0, t)
    ref = torch.stack([speech, speech * 0.5, dishes])
    mixture = 2.0 * speech  # SNR(mixture, speech ref) = -20 log10(1) = 0 dB
    evaluation = S5Evaluation()
    # Speech x2 both found (20 dB and 40 dB), Dishes missed, a false Pour
    est = torch.stack([_scaled(ref[1], 0.01), _scaled(ref[0], 0.1), torch.zeros(t)])
    evaluation.update(["Speech", "Speech", "Pour"], est, ["Speech", "Speech", "Dishes"], ref, mixture)
    # one Speech found (10 dB) of one reference
    est = torch.cat([_scaled(ref[:1], 10**-0.5), torch.zeros(2, t)])
    evaluation.update(["Speech", "silence", "silence"], est, ["Speech"], ref[:1], mixture)
    mix_vs_half = -20 * math.log10(3.0)  # mixture error = 3 * (0.5 speech)
    speech_snri = [20.0, 40.0 - mix_vs_half, 10.0]
    first = (speech_snri[0] + speech_snri[1] + 0 + 0) / 4
    result = evaluation.compute()
    assert result["capi_sdri"] == pytest.approx((first + 10.0) / 2, abs=TOL_DB)
    rows = {row["label"]: row for row in result["per_class"]}
    assert [row["label"] for row in result["per_class"]] == ["Dishes", "Pour", "Speech"]  # official class order
    assert rows["Speech"]["capi_sdri"] == pytest.approx(sum(speech_snri) / 3, abs=TOL_DB)
    assert rows["Speech"]["sdri_matched"] == pytest.approx(sum(speech_snri) / 3, abs=TOL_DB)
    assert (rows["Speech"]["n_ref"], rows["Speech"]["n_est"], rows["Speech"]["tp"]) == (3, 3, 3)
    assert rows["Dishes"] == {
        "label": "Dishes",
        "n_ref": 1,
        "n_est": 0,
        "tp": 0,
        "fp": 0,
        "fn": 1,
        "capi_sdri": 0.0,
        "sdri_matched": None,
    }
    assert (rows["Pour"]["fp"], rows["Pour"]["capi_sdri"], rows["Pour"]["sdri_matched"]) == (1, 0.0, None)
    assert result["accuracy_mixture"] == pytest.approx(50.0)
    assert result["accuracy_source"] == pytest.approx(100 * 3 / 5)


def test_label_counts_are_multisets_without_silence():
    counts = label_counts(["Speech", "Speech", "Cough"], ["Speech", "Cough", "Cough"])
    assert counts == {"Cough": LabelCount(1, 0, 1), "Speech": LabelCount(1, 1, 0)}
    assert label_counts(["silence", "Buzzer", "silence"], ["silence"] * 3) == {"Buzzer": LabelCount(0, 1, 0)}
    assert label_counts(["silence"] * 3, ["silence"] * 3) == {}


def test_label_accuracy_hand_computed():
    mixtures = [
        (["Speech", "Cough", "silence"], ["Cough", "Speech", "silence"]),  # exact (order free): TP 2
        (["Speech", "Speech", "silence"], ["Speech", "Dishes", "silence"]),  # TP 1, FP 1, FN 1
        (["silence"] * 3, ["silence"] * 3),  # exact, nothing counted
        (["Pour", "silence", "silence"], ["Pour", "Pour", "Typing"]),  # TP 1, FN 2
    ]
    mixture_level, source_level = label_accuracy([label_counts(e, r) for e, r in mixtures])
    assert mixture_level == pytest.approx(50.0)
    assert source_level == pytest.approx(100 * 4 / (4 + 1 + 3))
    assert label_accuracy([]) == (None, None)
    assert label_accuracy([label_counts(["silence"], ["silence"])]) == (100.0, None)


def test_silence_only_mixture_is_excluded_but_counts_as_exact_labels():
    evaluation = S5Evaluation()
    zeros = torch.zeros(3, 100)
    assert evaluation.update(["silence"] * 3, zeros, ["silence"] * 3, zeros, torch.ones(100)) is None
    result = evaluation.compute()
    assert (result["capi_sdri"], result["n_scored"], result["accuracy_mixture"]) == (None, 0, 100.0)
    assert result["per_class"] == []


def test_invalid_inputs_are_rejected():
    waves = torch.zeros(3, 100)
    with pytest.raises(ValueError, match="unknown"):
        capi_sdri_sample(["Speach", "silence", "silence"], waves, ["silence"] * 3, waves, waves[0])
    with pytest.raises(ValueError, match="labels for"):
        capi_sdri_sample(["Speech", "silence"], waves, ["silence"] * 3, waves, waves[0])

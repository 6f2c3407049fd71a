import csv
import sys

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score

from asdzoo.metrics.task2 import (
    Truth,
    evaluate_scores,
    official_score,
    result_rows,
    section_metrics,
    truth_from_ground_truth_dir,
    write_result_csv,
)
from asdzoo.metrics.torchmetric import Task2Score

# 4 source normals, 4 target normals, 2 source anomalies, 2 target anomalies
Y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
D = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1])


def test_perfect_inverted_and_ties():
    perfect = section_metrics(Y, Y + 0.01 * np.arange(12), D)
    assert perfect["AUC (source)"] == perfect["AUC (target)"] == perfect["pAUC"] == 1.0
    inverted = section_metrics(Y, -Y.astype(float), D)
    assert inverted["AUC (source)"] == 0.0 and inverted["AUC (target)"] == 0.0
    # McClish: 0.5 * (1 + (A - A_min) / (A_max - A_min)) with A = 0, A_min = 0.1^2 / 2, A_max = 0.1
    assert inverted["pAUC"] == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    ties = section_metrics(Y, np.zeros(12), D)
    assert ties["AUC (source)"] == ties["AUC (target)"] == 0.5 and ties["pAUC"] == pytest.approx(0.5)


def test_domain_auc_uses_all_anomalies_of_both_domains():
    # source normals score 0, target normals 2, all anomalies 1: source AUC perfect, target AUC zero
    s = np.where(Y == 1, 1.0, np.where(D == 0, 0.0, 2.0))
    v = section_metrics(Y, s, D)
    assert v["AUC (source)"] == 1.0 and v["AUC (target)"] == 0.0
    assert v["AUC (all)"] == pytest.approx(roc_auc_score(Y, s))


def test_one_class_domain_gives_a_clear_error():
    d = np.array([0] * 8 + [1] * 4)  # target domain has anomalies only, no normals
    with pytest.raises(ValueError, match=r"AUC \(target\).*only anomalous"):
        section_metrics(Y, np.arange(12.0), d)
    with pytest.raises(ValueError, match="only normal"):
        section_metrics(np.zeros(4), np.arange(4.0), np.zeros(4))


def test_against_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        d = rng.integers(0, 2, 200)
        s = rng.normal(size=200) + y
        v = section_metrics(y, s, d)
        for name, dom in (("source", 0), ("target", 1)):
            keep = (d == dom) | (y == 1)
            assert v[f"AUC ({name})"] == pytest.approx(roc_auc_score(y[keep], s[keep]))
        assert v["pAUC"] == pytest.approx(roc_auc_score(y, s, max_fpr=0.1))


def test_official_score_is_eps_floored_hmean():
    assert official_score([0.5, 0.5, 1.0]) == pytest.approx(scipy.stats.hmean([0.5, 0.5, 1.0]))
    assert official_score([0.0, 1.0, 1.0]) == pytest.approx(3 / (1 / sys.float_info.epsilon + 2))


def test_precision_recall_f1_from_decisions():
    dec = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1])
    v = section_metrics(Y, np.arange(12.0), D, dec)
    assert v["precision (source)"] == pytest.approx(2 / 3) and v["recall (source)"] == 1.0
    assert v["precision (target)"] == 1.0 and v["recall (target)"] == 0.5
    assert v["F1 score (target)"] == pytest.approx(2 / 3)


def _write(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_rows_matched_by_name_not_position(tmp_path):
    names = [
        f"section_00_{'source' if d == 0 else 'target'}_test_{'anomaly' if y else 'normal'}_{i:04d}.wav"
        for i, (y, d) in enumerate(zip(Y, D))
    ]
    truth = {("fan", "00"): Truth({n: (int(y), int(d)) for n, y, d in zip(names, Y, D)})}
    scores = np.random.default_rng(0).normal(size=12) + Y
    rows = list(zip(names, scores))
    _write(tmp_path / "anomaly_score_fan_section_00_test.csv", rows)
    a = evaluate_scores(tmp_path, truth).official_score
    _write(tmp_path / "anomaly_score_fan_section_00_test.csv", rows[::-1])  # shuffled order
    assert evaluate_scores(tmp_path, truth).official_score == a
    _write(tmp_path / "anomaly_score_fan_section_00_test.csv", rows[:-1])
    with pytest.raises(ValueError, match="1 test files have no row"):
        evaluate_scores(tmp_path, truth)


def test_ground_truth_folders_and_dev_style_aliases(tmp_path):
    gt = tmp_path / "gt"
    for sub in ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes"):
        (gt / sub).mkdir(parents=True)
    eval_names = [f"section_00_test_{i:04d}.wav" for i in range(12)]
    dev_names = [
        f"section_00_{'source' if d == 0 else 'target'}_test_{'anomaly' if y else 'normal'}_{i:04d}"
        for i, (y, d) in enumerate(zip(Y, D))
    ]
    _write(gt / "ground_truth_data/ground_truth_fan_section_00_test.csv", zip(eval_names, Y))
    _write(gt / "ground_truth_domain/ground_truth_fan_section_00_test.csv", zip(eval_names, D))
    _write(
        gt / "ground_truth_attributes/ground_truth_fan_section_00_test.csv",
        [(e, d, d + "_spd_1.wav") for e, d in zip(eval_names, dev_names)],
    )
    sub = tmp_path / "scores"
    sub.mkdir()
    s = np.arange(12.0) * (1 + Y)
    _write(sub / "anomaly_score_fan_section_00_test.csv", [(d + ".wav", v) for d, v in zip(dev_names, s)])
    _write(sub / "decision_result_fan_section_00_test.csv", [(e, int(y)) for e, y in zip(eval_names, Y)])
    res = evaluate_scores(sub, truth_from_ground_truth_dir(gt))
    direct = section_metrics(Y, s, D, Y)
    assert res.sections[0].values == pytest.approx(direct)
    assert res.sections[0].values["F1 score (source)"] == 1.0


def test_result_csv_has_official_layout(tmp_path):
    names = [f"n{i}.wav" for i in range(12)]
    truth = {(m, "00"): Truth({n: (int(y), int(d)) for n, y, d in zip(names, Y, D)}) for m in ("fan", "valve")}
    for m in ("fan", "valve"):
        _write(tmp_path / f"anomaly_score_{m}_section_00_test.csv", zip(names, np.arange(12.0) * (1 + Y)))
        _write(tmp_path / f"decision_result_{m}_section_00_test.csv", zip(names, Y))
    res = evaluate_scores(tmp_path, truth)
    write_result_csv(res, tmp_path / "result.csv")
    rows = list(csv.reader((tmp_path / "result.csv").read_text().splitlines()))
    assert rows[0] == ["fan"]
    assert rows[1][:5] == ["section", "AUC (all)", "AUC (source)", "AUC (target)", "pAUC"]
    labels = [r[0] for r in rows if r]
    for needed in (
        "arithmetic mean",
        "harmonic mean",
        "source harmonic mean",
        "target harmonic mean",
        "harmonic mean over all machine types, sections, and domains",
        "official score",
        "official score ci95",
    ):
        assert needed in labels
    official = next(r for r in rows if r and r[0] == "official score")
    assert float(official[2]) == pytest.approx(res.official_score)
    assert rows == [r for r in result_rows(res)]  # what is written is what the layout function returns
    assert res.as_dict()["machines"]["fan"]["TOTAL"] == pytest.approx(res.machine_total("fan"))


def test_torchmetric_matches_function():
    m = Task2Score()
    s = np.random.default_rng(3).normal(size=12) + Y
    m.update(torch.tensor(s[:6]), torch.tensor(Y[:6]), torch.tensor(D[:6]))
    m.update(torch.tensor(s[6:]), torch.tensor(Y[6:]), torch.tensor(D[6:]))
    out = m.compute()
    v = section_metrics(Y, s, D)
    assert float(out["auc_source"]) == pytest.approx(v["AUC (source)"])
    assert float(out["hmean"]) == pytest.approx(official_score([v["AUC (source)"], v["AUC (target)"], v["pAUC"]]))

"""asdzoo's Task 2 evaluator against the official nttcslab evaluator's own output files, cell by cell.

The golden case (``../shared/reference/dcase_evaluator``, see its README) holds two systems scored by the official
``dcase2024_task2_evaluator.py``: ``sysP_evalnames_noisy`` (eval-style names, Gaussian scores) and
``sysQ_devnames_ties_perfect`` (dev-style names mapped through ``ground_truth_attributes``, heavy ties, one perfect
machine, one machine whose target decisions are all 0 so its harmonic means hit the float-eps floor).

Tolerance: every number within 1e-12 relative (no absolute slack, so the eps-floored 4.44e-16 values are held to
1e-12 of themselves too). In practice every cell is bit-identical except ``official score ci95``, which differs
by 4e-14 relative: the official run used scipy 1.10, whose Student-t quantile ``t.ppf(0.025…, n - 1)`` is off by
that much (the jackknife AUC/pAUC values themselves are bit-identical across sklearn 1.5 and 1.9). Text cells and
the row/column structure must match exactly. The official ``--seed=13711`` only names the DCASE baseline's
fallback score files; nothing in the evaluator is random, so there is nothing to mirror.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from asdzoo.metrics.task2 import evaluate_scores, result_rows, truth_from_ground_truth_dir, write_result_csv

from reference import reference_dir

RTOL = 1e-12
SYSTEMS = {"sysP_evalnames_noisy": "teamOmicron", "sysQ_devnames_ties_perfect": "teamSigma"}
MACHINES = ["EpsilonCompressor", "EtaDrill", "ZetaConveyor"]
# Cells of asdzoo's result CSV beyond the official ones, as (row label, column index). asdzoo keeps the official
# layout exactly; its extras (per-machine hmean "TOTAL", macro(3)) live in EvaluationResult / format_table instead.
EXTRA_CELLS: set[tuple[str, int]] = set()
# Numeric cells per official result file: 3 machines x (10 section values + 4 summary rows x 5) + 4 x 5 + 2.
NUMERIC_CELLS = 3 * (10 + 20) + 20 + 2
OVER_ALL = " over all machine types, sections, and domains"


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _close(ours: float, official: float) -> bool:
    return math.isclose(ours, official, rel_tol=RTOL, abs_tol=0.0)


@pytest.fixture(scope="module")
def ref() -> Path:
    return reference_dir("dcase_evaluator")


@pytest.fixture(scope="module")
def evaluated(ref, tmp_path_factory):
    truth = truth_from_ground_truth_dir(ref)
    out_dir = tmp_path_factory.mktemp("teams_result")
    out = {}
    for system, team in SYSTEMS.items():
        result = evaluate_scores(ref / "teams" / team / system, truth)
        path = out_dir / f"{system}_result.csv"
        write_result_csv(result, path)
        out[system] = (result, path)
    return out


@pytest.mark.parametrize("system", SYSTEMS)
def test_result_csv_matches_official_cell_by_cell(ref, evaluated, system):
    result, path = evaluated[system]
    ours = _rows(path)
    official = _rows(ref / "official_output" / "teams_result" / f"{system}_result.csv")
    assert len(ours) == len(official), "row count (blank separator rows included) differs from the official file"
    mismatches, numeric, extra = [], 0, set()
    for r, (mine, theirs) in enumerate(zip(ours, official)):
        label = theirs[0] if theirs else ""
        for c, cell in enumerate(theirs):
            got = mine[c] if c < len(mine) else "<missing>"
            want = _number(cell) if c > 0 else None  # column 0 holds labels and section ids ("00"): text
            if want is None:
                ok = got == cell
            else:
                numeric += 1
                ok = _number(got) is not None and _close(float(got), want)
            if not ok:
                mismatches.append(f"row {r + 1} ({label!r}) col {c}: asdzoo {got!r}, official {cell!r}")
        extra |= {(label, c) for c in range(len(theirs), len(mine))}
    assert not mismatches, "\n".join(mismatches)
    assert numeric == NUMERIC_CELLS
    assert extra == EXTRA_CELLS
    # the file on disk holds exactly the layout function's rows (which the additional-results test reads)
    assert ours[:-2] == result_rows(result, with_ci=False)[:-1] and ours[-2][0] == "official score ci95"


def test_official_values_listed_in_reference_readme(evaluated):
    # The README's headline numbers, through the Python API rather than the CSV text.
    expected = {
        "sysP_evalnames_noisy": (0.74780994554127, 0.7719226376943188),
        "sysQ_devnames_ties_perfect": (0.7869533691367278, 0.8146310337585054),
    }
    for system, (score, a_mean) in expected.items():
        result = evaluated[system][0]
        assert _close(result.official_score, score)
        assert _close(result.macro3, a_mean)  # = the paper csv's "TOTAL score" a-mean (one section per machine)
    q = {s.machine: s.values for s in evaluated["sysQ_devnames_ties_perfect"][0].sections}
    assert q["EtaDrill"]["AUC (source)"] == q["EtaDrill"]["AUC (target)"] == q["EtaDrill"]["pAUC"] == 1.0
    assert q["ZetaConveyor"]["F1 score (target)"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# The --out_all extras. Every non-empty official cell is either compared with an asdzoo output or listed in
# NOT_PROVIDED (asdzoo has no equivalent); the 2024 machine columns hard-coded in the official script are empty.


def _csv_row(result, label: str, column: str) -> float:
    """A number from asdzoo's own result CSV rows (``column``: AUC, pAUC, ...)."""
    cols = ["", "", "AUC", "pAUC", "precision", "recall", "F1 score"]
    row = next(r for r in result_rows(result, with_ci=False) if r and r[0] == label)
    return float(row[cols.index(column)])


def _section(result, machine: str) -> dict[str, float]:
    (s,) = result.machine_sections(machine)  # one section (00) per machine in this case
    return s.values


def _normal_mean(result, machine: str, domain: int) -> float:
    (s,) = result.machine_sections(machine)
    return float(np.mean(s.y_score[(s.y_true == 0) & (s.domain == domain)]))


def _official_score_columns(result, column: str):
    if column == "official score":
        return result.official_score
    if column == "arithmetic mean":
        return _csv_row(result, "arithmetic mean" + OVER_ALL, "AUC")
    if column.startswith("harmonic mean ("):
        domain = column[len("harmonic mean (") : -1]
        return _csv_row(result, f"{domain} harmonic mean" + OVER_ALL, "AUC")
    machine, _, what = column.partition(" ")
    if what.startswith("AUC (") and machine in MACHINES:
        return _section(result, machine)[what]
    if what.startswith("Score (") and machine in MACHINES:
        return _normal_mean(result, machine, 0 if what == "Score (source)" else 1)
    raise KeyError(column)


def _paper(result, metric: str, column: str):
    key = {"AUC (source)": "AUC (source)", "AUC (target)": "AUC (target)", "pAUC (source, target)": "pAUC"}
    if metric == "TOTAL score":
        return {"h-mean": result.official_score, "a-mean": result.macro3}[column]
    if column in MACHINES:
        return _section(result, column)[key[metric]]
    if metric == "pAUC (source, target)":
        label = {"h-mean": "harmonic mean", "a-mean": "arithmetic mean"}[column]
        return _csv_row(result, label + OVER_ALL, "pAUC")
    if column == "h-mean":
        return _csv_row(result, f"{metric[5:-1]} harmonic mean" + OVER_ALL, "AUC")
    return None  # a-mean of AUC (source) / AUC (target) over machines: asdzoo reports no such number


NOT_PROVIDED = {
    ("teams_official_score_paper.csv", system, metric, "a-mean")
    for system in SYSTEMS
    for metric in ("AUC (source)", "AUC (target)")
}


def _check_table(path: Path, evaluated, n_index: int, lookup) -> tuple[int, set]:
    rows = _rows(path)
    header, compared, missing, bad = rows[0], 0, set(), []
    for row in rows[1:]:
        system, index = row[0], row[1:n_index]
        result = evaluated[system][0]
        for column, cell in zip(header[n_index:], row[n_index:]):
            if cell == "":
                # empty: the 2024 machines, the summaries of the per-section files, TOTAL's machine columns
                ours_machine = any(column.startswith(m) for m in MACHINES)
                assert not ours_machine or index == ["TOTAL score"], f"{path.name}: {system} {column} is empty"
                continue
            ours = lookup(result, *index, column)
            if ours is None:
                missing.add((path.name, system, *index, column))
                continue
            compared += 1
            if not _close(ours, float(cell)):
                bad.append(f"{path.name} {system} {index} {column}: asdzoo {ours!r}, official {cell}")
    assert not bad, "\n".join(bad)
    return compared, missing


def test_additional_results_match_official(ref, evaluated):
    extra = ref / "official_output" / "teams_additional_result"
    compared, missing = 0, set()
    tables = [
        (extra / "teams_official_score.csv", 1, _official_score_columns),
        (extra / "teams_section_00_auc.csv", 1, _official_score_columns),
        (extra / "teams_section_00_score.csv", 1, _official_score_columns),
        (extra / "teams_official_score_paper.csv", 2, _paper),
    ] + [(extra / system / "official_score.csv", 1, _official_score_columns) for system in SYSTEMS]
    for path, n_index, lookup in tables:
        n, m = _check_table(path, evaluated, n_index, lookup)
        compared += n
        missing |= m
    assert missing == NOT_PROVIDED
    # official_score.csv: 4 summary + 6 machine AUCs, in the combined file and per system; section AUC: 6;
    # section score: 6; paper: 4 metrics x (2 means + 3 machines) minus TOTAL's 3 machine cells, minus NOT_PROVIDED
    assert compared == 2 * (10 + 6 + 6 + 10 + (4 * 5 - 3 - 2))

"""The official DCASE Task 2 evaluator's definitions (nttcslab ``dcase202x_task2_evaluator``).

Per machine and section:
- AUC(source) / AUC(target): ROC AUC over that domain's normals plus ALL anomalies of both domains;
- pAUC: ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised) over all clips of the section;
- precision / recall / F1 per domain from the 0/1 decisions, denominators floored at float eps.
Official score: harmonic mean of every section's AUC(source), AUC(target) and pAUC, each floored at eps.
Rows are matched by file name, never by position.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.stats
from sklearn import metrics as skm

MAX_FPR = 0.1
EPS = sys.float_info.epsilon
DOMAINS = ("source", "target")
SECTION_COLUMNS = [
    "AUC (all)",
    "AUC (source)",
    "AUC (target)",
    "pAUC",
    "precision (source)",
    "precision (target)",
    "recall (source)",
    "recall (target)",
    "F1 score (source)",
    "F1 score (target)",
]


@dataclass
class SectionResult:
    machine: str
    section: str
    values: dict[str, float]
    names: list[str]
    y_true: np.ndarray
    y_score: np.ndarray
    domain: np.ndarray  # 0 = source, 1 = target

    @property
    def official_triplet(self) -> list[float]:
        return [self.values["AUC (source)"], self.values["AUC (target)"], self.values["pAUC"]]


@dataclass
class EvaluationResult:
    sections: list[SectionResult] = field(default_factory=list)

    @property
    def machines(self) -> list[str]:
        return sorted({s.machine for s in self.sections})

    def machine_sections(self, machine: str) -> list[SectionResult]:
        return [s for s in self.sections if s.machine == machine]

    @property
    def official_score(self) -> float:
        """Harmonic mean in the evaluator's order: every AUC(source), then every AUC(target), then every pAUC.

        (The order only moves the last bit, but it lets the result CSV reproduce the official file exactly.)
        """
        trip = [s.official_triplet for s in self.sections]
        return official_score([t[k] for k in range(3) for t in trip])

    def machine_total(self, machine: str) -> float:
        """Extra column ("TOTAL"): harmonic mean of one machine's AUC(s), AUC(t), pAUC values."""
        return official_score([v for s in self.machine_sections(machine) for v in s.official_triplet])

    @property
    def macro3(self) -> float:
        """Extra column: arithmetic mean of the mean AUC(source), mean AUC(target) and mean pAUC."""
        trip = np.array([s.official_triplet for s in self.sections])
        return float(trip.mean(axis=0).mean())

    def as_dict(self) -> dict:
        return {
            "official_score": self.official_score,
            "macro3": self.macro3,
            "machines": {
                m: {"TOTAL": self.machine_total(m), "sections": {s.section: s.values for s in self.machine_sections(m)}}
                for m in self.machines
            },
        }


def official_score(values) -> float:
    """Harmonic mean with every value floored at float eps (the evaluator's ``hmean(maximum(x, eps))``)."""
    return float(scipy.stats.hmean(np.maximum(np.asarray(values, dtype=float), EPS), axis=None))


def _auc(y_true: np.ndarray, y_score: np.ndarray, max_fpr: float | None = None, what: str = "AUC") -> float:
    if len(np.unique(y_true)) < 2:
        raise ValueError(
            f"{what} needs both normal and anomalous clips, got only "
            f"{'anomalous' if np.all(y_true == 1) else 'normal'} ones"
        )
    return float(skm.roc_auc_score(y_true, y_score, max_fpr=max_fpr))


def section_metrics(y_true, y_score, domain, decision=None) -> dict[str, float]:
    """All per-section numbers of the official evaluator (``domain``: 0 source, 1 target)."""
    y_true, y_score, domain = (np.asarray(a) for a in (y_true, y_score, domain))
    out = {"AUC (all)": _auc(y_true, y_score), "pAUC": _auc(y_true, y_score, MAX_FPR, "pAUC")}
    for d_idx, d_name in enumerate(DOMAINS):
        keep = (domain == d_idx) | (y_true != 0)
        out[f"AUC ({d_name})"] = _auc(
            y_true[keep], y_score[keep], what=f"AUC ({d_name}) ({d_name} normals + all anomalies)"
        )
        if decision is not None:
            in_domain = domain == d_idx
            yt, yd = y_true[in_domain], np.asarray(decision)[in_domain]
            tp = float(np.sum((yt == 1) & (yd == 1)))
            fp = float(np.sum((yt == 0) & (yd == 1)))
            fn = float(np.sum((yt == 1) & (yd == 0)))
            prec = tp / max(tp + fp, EPS)
            rec = tp / max(tp + fn, EPS)
            out[f"precision ({d_name})"] = prec
            out[f"recall ({d_name})"] = rec
            out[f"F1 score ({d_name})"] = 2.0 * prec * rec / max(prec + rec, EPS)
    return out


# ---------------------------------------------------------------------------------------------
# Ground truth and submission files


@dataclass(frozen=True)
class Truth:
    """Ground truth of one machine/section: file name -> (is_anomaly, domain index)."""

    labels: dict[str, tuple[int, int]]
    aliases: dict[str, str] = field(default_factory=dict)  # dev-style name -> eval name
    source: str = ""  # where the labels came from (a ground-truth CSV, a test folder): errors name it


def read_two_column_csv(path: Path) -> dict[str, str]:
    """``<wav name>,<value>`` rows; a file that is not UTF-8 CSV (binary, an unclosed quote) is named, not raised."""
    try:
        with open(path, newline="") as f:
            return _two_column_rows(path, csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a UTF-8 CSV file ({err})") from None


def _two_column_rows(path: Path, reader) -> dict[str, str]:
    rows: dict[str, str] = {}
    for lineno, row in enumerate(reader, 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}:{lineno}: expected '<wav name>,<value>', got {_short(row)}")
        if row[0] in rows:
            raise ValueError(f"{path}:{lineno}: file {_short(row[0])} listed twice")
        rows[row[0]] = row[1]
    return rows


def _short(value, limit: int = 120) -> str:
    """``repr`` cut to ``limit`` characters: an unclosed quote turns a whole file into one field."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _binary_column(path: Path, rows: dict[str, str], what: str) -> dict[str, int]:
    """Ground-truth values must be 0 or 1 (``1.0`` is accepted, as the evaluator's ``float`` parse does)."""
    out = {}
    for name, value in rows.items():
        try:
            v = float(value)
        except ValueError:
            v = None
        if v not in (0.0, 1.0):
            raise ValueError(f"{path}: {what} of {_short(name)} must be 0 or 1, got {_short(value)}")
        out[name] = int(v)
    return out


def truth_from_ground_truth_dir(gt_root: Path) -> dict[tuple[str, str], Truth]:
    """Official ``ground_truth_data/``, ``ground_truth_domain/`` and ``ground_truth_attributes/``."""
    gt_root = Path(gt_root)
    data_dir = gt_root / "ground_truth_data"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: missing ground-truth folder")
    out = {}
    for path in sorted(data_dir.glob("ground_truth_*_section_*_test.csv")):
        machine, section = _machine_section(path.name, prefix="ground_truth_")
        domain_path = gt_root / "ground_truth_domain" / path.name
        if not domain_path.is_file():
            raise FileNotFoundError(f"{domain_path}: missing domain ground truth for {machine} section {section}")
        labels_raw = _binary_column(path, read_two_column_csv(path), "label (1 = anomaly)")
        domains_raw = _binary_column(domain_path, read_two_column_csv(domain_path), "domain (1 = target)")
        if set(labels_raw) != set(domains_raw):
            raise ValueError(f"{domain_path}: file names differ from {path}")
        labels = {n: (labels_raw[n], domains_raw[n]) for n in labels_raw}
        aliases = {}
        attr_path = gt_root / "ground_truth_attributes" / path.name
        if attr_path.is_file():
            with open(attr_path, newline="") as f:
                for row in csv.reader(f):
                    if len(row) >= 2:
                        aliases[f"{row[1]}.wav"] = row[0]
                    if len(row) >= 3:
                        aliases[row[2]] = row[0]
        out[(machine, section)] = Truth(labels, aliases, str(path))
    if not out:
        raise FileNotFoundError(f"{data_dir}: no ground_truth_<machine>_section_<NN>_test.csv files")
    return out


def truth_from_data_root(root: Path) -> dict[tuple[str, str], Truth]:
    """Labels and domains read from dev file names under ``<root>/<machine>/test/``."""
    from asdzoo.data.task2 import list_machines, scan_clips

    out: dict[tuple[str, str], dict] = {}
    for machine in list_machines(root):
        for clip in scan_clips(root, machine, "test"):
            if clip.label is None:
                raise ValueError(f"{clip.path}: eval-style name carries no label; use --ground-truth")
            out.setdefault((machine, clip.section), {})[clip.name] = (
                int(clip.label == "anomaly"),
                DOMAINS.index(clip.domain),
            )
    return {(m, sec): Truth(v, source=str(Path(root) / m / "test")) for (m, sec), v in out.items()}


def _machine_section(file_name: str, prefix: str) -> tuple[str, str]:
    stem = file_name[len(prefix) :].removesuffix("_test.csv")
    machine, _, section = stem.partition("_section_")
    return machine, section


def _read_submission(path: Path, truth: Truth, decision: bool) -> dict[str, float]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing submission file")
    raw = read_two_column_csv(path)
    values: dict[str, float] = {}
    for name, value in raw.items():
        key = truth.aliases.get(name, name)
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"{path}: value {value!r} for {name} is not a number") from None
        if not np.isfinite(v):
            raise ValueError(f"{path}: value for {name} is not finite")
        if decision and v not in (0.0, 1.0):
            raise ValueError(f"{path}: decision for {name} must be 0 or 1, got {value!r}")
        values[key] = v
    missing = sorted(set(truth.labels) - set(values))
    extra = sorted(set(values) - set(truth.labels))
    if missing:
        raise ValueError(f"{path}: {len(missing)} test files have no row, e.g. {missing[0]}")
    if extra:
        raise ValueError(f"{path}: {len(extra)} rows name files that are not in the ground truth, e.g. {extra[0]}")
    return values


def evaluate_scores(
    scores_dir: Path, truth: dict[tuple[str, str], Truth], machines: list[str] | None = None
) -> EvaluationResult:
    """Evaluate ``anomaly_score_<M>_section_<NN>_test.csv`` (+ ``decision_result_…``) in ``scores_dir``."""
    scores_dir = Path(scores_dir)
    if not scores_dir.is_dir():
        raise FileNotFoundError(f"{scores_dir}: scores folder not found")
    result = EvaluationResult()
    for (machine, section), t in sorted(truth.items()):
        if machines and machine not in machines:
            continue
        scores = _read_submission(scores_dir / f"anomaly_score_{machine}_section_{section}_test.csv", t, False)
        dec_path = scores_dir / f"decision_result_{machine}_section_{section}_test.csv"
        decisions = _read_submission(dec_path, t, True) if dec_path.is_file() else None
        names = sorted(t.labels)
        y_true = np.array([t.labels[n][0] for n in names])
        dom = np.array([t.labels[n][1] for n in names])
        y_score = np.array([scores[n] for n in names])
        dec = None if decisions is None else np.array([int(decisions[n]) for n in names])
        try:
            values = section_metrics(y_true, y_score, dom, dec)
        except ValueError as err:  # e.g. a section whose ground truth has no anomalies: name where it came from
            raise ValueError(f"{t.source or machine}: {machine} section {section}: {err}") from None
        result.sections.append(SectionResult(machine, section, values, names, y_true, y_score, dom))
    if not result.sections:
        raise ValueError(f"{scores_dir}: nothing to evaluate (no machine matched)")
    return result


# ---------------------------------------------------------------------------------------------
# Output: the official result CSV and a readable table


def jackknife_ci95(fn, y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Half-width of the jackknife 95% interval of ``fn(y_true, y_score)`` (as the evaluator reports)."""
    n = len(y_true)
    idx = np.arange(n)
    thetas = np.array([fn(y_true[idx != i], y_score[idx != i]) for i in range(n)])
    sigma = np.sqrt(np.sum((thetas - thetas.mean()) ** 2) / (n * (n - 1)))
    confidence = 0.95  # the quantile is taken at (1 - 0.95) / 2 = 0.025000000000000022, as the evaluator does
    return float(abs(scipy.stats.t.ppf((1 - confidence) / 2, n - 1)) * sigma)


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def result_rows(result: EvaluationResult, with_ci: bool = True) -> list[list[str]]:
    """Rows in the official evaluator's ``<team>_result.csv`` layout."""
    rows: list[list[str]] = []
    all_perf = []

    def perf_block(secs: list[SectionResult]) -> np.ndarray:
        v = [s.values for s in secs]
        has_dec = all("precision (source)" in x for x in v)

        def pair(a, b):
            return [x[a] for x in v] + [x[b] for x in v]

        block = [pair("AUC (source)", "AUC (target)"), pair("pAUC", "pAUC")]
        if has_dec:
            block += [
                pair("precision (source)", "precision (target)"),
                pair("recall (source)", "recall (target)"),
                pair("F1 score (source)", "F1 score (target)"),
            ]
        return np.array(block, dtype=float)

    def summary(label_prefix: str, perf: np.ndarray):
        half = perf.shape[1] // 2
        rows.append([f"arithmetic mean{label_prefix}", ""] + [_fmt(x) for x in perf.mean(axis=1)])
        for name, part in (
            ("harmonic mean", perf),
            ("source harmonic mean", perf[:, :half]),
            ("target harmonic mean", perf[:, half:]),
        ):
            rows.append(
                [f"{name}{label_prefix}", ""] + [_fmt(x) for x in scipy.stats.hmean(np.maximum(part, EPS), axis=1)]
            )

    for machine in result.machines:
        secs = result.machine_sections(machine)
        rows.append([machine])
        rows.append(["section"] + SECTION_COLUMNS)
        for s in secs:
            rows.append([s.section] + [_fmt(s.values[c]) if c in s.values else "" for c in SECTION_COLUMNS])
        rows.append(["", "", "AUC", "pAUC", "precision", "recall", "F1 score"])
        perf = perf_block(secs)
        all_perf.append(perf)
        summary("", perf)
        rows.append([])
    rows.append(["", "", "AUC", "pAUC", "precision", "recall", "F1 score"])
    n_rows = min(p.shape[0] for p in all_perf)
    src = np.concatenate([p[:n_rows, : p.shape[1] // 2] for p in all_perf], axis=1)
    tgt = np.concatenate([p[:n_rows, p.shape[1] // 2 :] for p in all_perf], axis=1)
    summary(" over all machine types, sections, and domains", np.concatenate([src, tgt], axis=1))
    rows.append([])
    rows.append(["official score", "", _fmt(result.official_score)])
    if with_ci:
        y = np.concatenate([s.y_true for s in result.sections])
        p = np.concatenate([s.y_score for s in result.sections])
        ci = np.mean(
            [
                jackknife_ci95(skm.roc_auc_score, y, p),
                jackknife_ci95(lambda a, b: skm.roc_auc_score(a, b, max_fpr=MAX_FPR), y, p),
            ]
        )
        rows.append(["official score ci95", "", _fmt(ci)])
    rows.append([])
    return rows


def write_result_csv(result: EvaluationResult, path: Path, with_ci: bool = True) -> None:
    from asdzoo.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(result_rows(result, with_ci))


def format_table(result: EvaluationResult) -> str:
    """Readable per-machine table (percent) with the official score and the extra columns."""
    head = f"{'machine':<22}{'section':>8}{'AUC(s)':>9}{'AUC(t)':>9}{'pAUC':>9}{'TOTAL':>9}"
    lines = [head, "-" * len(head)]
    for m in result.machines:
        for s in result.machine_sections(m):
            a, b, c = (100 * x for x in s.official_triplet)
            lines.append(f"{m:<22}{s.section:>8}{a:9.2f}{b:9.2f}{c:9.2f}{100 * result.machine_total(m):9.2f}")
    lines.append("-" * len(head))
    lines.append(f"official score (hmean of all AUC(s), AUC(t), pAUC): {100 * result.official_score:.2f}")
    lines.append(f"macro(3) (mean of mean AUC(s), mean AUC(t), mean pAUC): {100 * result.macro3:.2f}")
    return "\n".join(lines)

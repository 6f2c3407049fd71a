"""ROC curves and score histograms per machine and domain (``asdzoo evaluate --plots DIR``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asdzoo.metrics.task2 import DOMAINS, EvaluationResult


def write_plots(result: EvaluationResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from asdzoo.atomic import atomic_path

    out_dir = Path(out_dir)
    written = []
    for s in result.sections:
        fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(10, 4))
        for d_idx, d_name in enumerate(DOMAINS):
            keep = (s.domain == d_idx) | (s.y_true == 1)
            fpr, tpr, _ = roc_curve(s.y_true[keep], s.y_score[keep])
            ax_roc.plot(fpr, tpr, label=f"{d_name} (AUC {100 * s.values[f'AUC ({d_name})']:.1f})")
        ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax_roc.axvline(0.1, color="grey", lw=0.8, ls="--")
        ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{s.machine} section {s.section}")
        ax_roc.legend(loc="lower right")
        bins = np.histogram_bin_edges(s.y_score, bins=30)
        for d_idx, d_name in enumerate(DOMAINS):
            for label, style in ((0, "normal"), (1, "anomaly")):
                sel = (s.domain == d_idx) & (s.y_true == label)
                if sel.any():
                    ax_hist.hist(s.y_score[sel], bins=bins, alpha=0.45, label=f"{d_name} {style}")
        ax_hist.set(xlabel="anomaly score", ylabel="clips", title="score histogram")
        ax_hist.legend()
        fig.tight_layout()
        path = out_dir / f"{s.machine}_section_{s.section}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        written.append(path)
    return written

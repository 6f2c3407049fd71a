"""Official DCASE metrics: Task 2 evaluator (DESIGN §5) and a torchmetrics wrapper for validation."""

from asdzoo.metrics.task2 import (
    EvaluationResult,
    SectionResult,
    evaluate_scores,
    official_score,
    section_metrics,
)

__all__ = ["EvaluationResult", "SectionResult", "evaluate_scores", "official_score", "section_metrics"]

"""Point scores for per-epoch validation; the full report with confidence intervals is ``metrics.py``."""

from __future__ import annotations

import numpy as np


def quick_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 over the classes present in ``y_true``."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    present = support > 0
    tp = np.diag(confusion).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    predicted = confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / max(1, confusion.sum())),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }

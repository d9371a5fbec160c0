"""PNG figures a run leaves beside its metrics: the confusion matrix and the training curves.

matplotlib costs about half a second to import, so it is imported inside the functions and ``pathotune
--help`` never pays for it. The figures are drawn on a ``Figure`` bound to the Agg canvas rather than through
``pyplot``: that picks the Agg backend for these figures only, never touches the global backend of a notebook
or GUI that imports us, and leaves no figure behind in pyplot's registry. Each file is written under a
temporary name in the same folder and renamed (``files.atomic_write``), so a crash or a reader polling the
run folder never sees half a PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120
_LOSS_KEYS = (("train_loss", "train loss"), ("val_loss", "val loss"))
_METRIC_KEYS = (("val_accuracy", "val accuracy"), ("val_balanced_accuracy", "val balanced accuracy"))


def save_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Draw counts in each cell, coloured by the share of its true class (row-normalised).

    Colouring by row share keeps a rare class readable next to a common one; the count in the cell keeps
    the scale honest.

    Args:
        matrix: Square confusion matrix, rows true and columns predicted.
        class_names: One name per row, in order.
        path: Where to write the PNG; missing parent folders are created.
        title: Optional title above the matrix.

    Returns:
        The path written.

    Raises:
        ValueError: If the matrix is not square or does not match ``class_names``.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    c = len(class_names)
    if counts.shape != (c, c):
        raise ValueError(f"confusion matrix must be {c}x{c} for {c} class names, got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    side = min(14.0, max(4.5, 0.75 * c + 2.5))
    fig = _new_figure((side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    font = max(6.0, 11.0 - 0.4 * c)
    for i in range(c):
        for j in range(c):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=font,
                color="white" if share[i, j] > 0.55 else "black",
            )
    ax.set_xticks(range(c), labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(c), labels=list(class_names))
    ax.tick_params(labelsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return _save_atomically(fig, path)


def save_history_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot loss, validation metrics and learning rate against epoch, one panel each.

    Missing or ``None`` values (no validation that epoch, a resumed run) leave gaps rather than failing; a
    series with no values at all is left out, and an empty history still gives a figure that says so.

    Args:
        history: One dict per epoch with ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``,
            ``val_balanced_accuracy`` and ``lr``; any of the values may be ``None``.
        path: Where to write the PNG; missing parent folders are created.

    Returns:
        The path written.
    """
    epochs = np.array(
        [row.get("epoch") if row.get("epoch") is not None else i + 1 for i, row in enumerate(history)],
        dtype=np.float64,
    )
    fig = _new_figure((7.0, 8.0))
    loss_ax, metric_ax, lr_ax = fig.subplots(3, 1, sharex=True)

    for ax, keys, ylabel in ((loss_ax, _LOSS_KEYS, "loss"), (metric_ax, _METRIC_KEYS, "score")):
        for key, label in keys:
            values = _series(history, key)
            if np.isfinite(values).any():
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    if metric_ax.lines:
        metric_ax.set_ylim(-0.02, 1.02)

    lr = _series(history, "lr")
    if np.isfinite(lr).any():
        lr_ax.plot(epochs, lr, marker="o", markersize=3, color="tab:gray")
        if np.nanmin(lr) > 0:
            lr_ax.set_yscale("log")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("epoch")
    lr_ax.grid(alpha=0.3)

    if not history:
        loss_ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=loss_ax.transAxes)
    return _save_atomically(fig, path)


def _new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas, independent of pyplot and of the global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """One column of the history as floats, with NaN where the value is missing or not finite."""
    values = np.array([math.nan if row.get(key) is None else float(row[key]) for row in history])
    return np.where(np.isfinite(values), values, math.nan).astype(np.float64)


def _save_atomically(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG through ``files.atomic_write``: a reader never sees half a picture."""
    from pathotune_cli.files import atomic_write

    return atomic_write(path, lambda temp: fig.savefig(temp, format="png"))


def save_roc_curves(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """One-vs-rest ROC curve per class (one curve for two classes: the second class against the first).

    Classes without both positives and negatives are left out; with none left the figure says so.
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    fig = _new_figure((5.5, 5.0))
    ax = fig.add_subplot()
    classes = [1] if p.shape[1] == 2 else list(range(p.shape[1]))
    for c in classes:
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr = _roc(positive, p[:, c])
        ax.plot(fpr, tpr, label=str(class_names[c]))
    ax.plot([0, 1], [0, 1], linestyle=":", color="tab:gray")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if ax.lines[:-1]:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no class with positives and negatives", ha="center", va="center")
    if title:
        ax.set_title(title)
    return _save_atomically(fig, path)


def _roc(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="stable")
    pos = positive[order].astype(np.float64)
    tps, fps = np.cumsum(pos), np.cumsum(1 - pos)
    last = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tpr = np.r_[0.0, tps[last] / max(1.0, pos.sum())]
    fpr = np.r_[0.0, fps[last] / max(1.0, (1 - pos).sum())]
    return fpr, tpr

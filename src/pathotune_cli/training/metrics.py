"""Classification metrics with bootstrap confidence intervals, in plain numpy.

A lab deciding whether a tuned prompt is good enough needs more than one number: a balanced accuracy of 0.91
on 300 tiles and on 30,000 tiles mean different things. So every metric here comes with a percentile bootstrap
interval, and the whole report is a JSON-ready dict (no NaN: an undefined value is ``None``) that ``runs/``
writes beside the checkpoint.

Why not scikit-learn: it is not a dependency of the package, and calling it once per resample would take
seconds. Instead each resample is reduced to a weight per sample (how often it was drawn); confusion matrices
and rank-based AUROCs are then weighted sums, computed for a block of resamples at once. The tests check every
number against scikit-learn.

Semantics where the metrics are undefined or ambiguous (the same rules apply to each resample):

- ``predicted`` is ``argmax(probs)`` (first column on ties). ``probs`` need not sum to 1; AUROC only ranks.
- ``balanced_accuracy``: mean recall over the classes present in ``y_true``.
- ``macro_f1``: mean F1 over the classes present in ``y_true`` *or* predicted, as scikit-learn's
  ``f1_score(average="macro")`` with its default labels. A class in neither is left out rather than counted 0.
- ``macro_auroc``: one-vs-rest AUROC (Mann-Whitney, ties count one half) averaged over the classes that have
  both positives and negatives in ``y_true``; ``None`` when no class does (one class present, or N=1).
- ``cohen_kappa``: quadratic weights over the class *indices* of ``class_names`` when ``ordinal`` (so a
  missing middle grade still counts as a step), unweighted otherwise; ``None`` when chance agreement is
  already perfect (every label and prediction the same single class).
- per class: precision of a class never predicted is 0 (scikit-learn's ``zero_division=0``); recall of a class
  absent from ``y_true`` is ``None`` (nothing to recall); F1 is ``2tp / (2tp + fp + fn)``, ``None`` when the
  class is neither present nor predicted.
- Resamples where a metric is undefined are dropped for that metric only; an interval is ``None`` when no
  resample defines it or when ``bootstrap=0``. With N=1 every resample is the sample, so the interval
  collapses to the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# Resamples are scored in blocks of about this many (resample, sample) cells: ~32 MB per float64 working
# array, a handful alive at once, whatever N is.
_BLOCK_CELLS = 4_000_000

_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa")
_PER_CLASS = ("precision", "recall", "f1")


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    ordinal: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Score predictions and bootstrap a confidence interval for every metric.

    Args:
        y_true: True class indices, shape (N,), each in ``[0, C)``.
        probs: Class scores, shape (N, C); the prediction is the argmax of each row.
        class_names: The C class names, in column order (and grade order when ``ordinal``).
        ordinal: Whether the classes are ordered grades; selects quadratic-weighted kappa.
        bootstrap: Number of percentile-bootstrap resamples; 0 skips the intervals.
        seed: Seed for ``np.random.default_rng``; the same seed gives the same intervals.
        ci: Coverage of the interval, in (0, 1).

    Returns:
        A JSON-serialisable dict with ``n``, ``metrics``, ``per_class``, ``confusion_matrix`` (rows true,
        columns predicted), ``classes``, ``kappa_weights`` and ``bootstrap``. Each metric is
        ``{"value", "ci_low", "ci_high"}``; undefined values are ``None``.

    Raises:
        ValueError: If the shapes disagree, a label is out of range, a score is not finite, or
            ``bootstrap``/``ci`` is out of range.
    """
    y, p, names = _validate(y_true, probs, class_names)
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    n, c = p.shape
    pred = p.argmax(axis=1)
    weights = _quadratic_weights(c) if ordinal else 1.0 - np.eye(c)

    point = _score_block(np.ones((1, n)), y, pred, p, weights)
    draws = _bootstrap(y, pred, p, weights, bootstrap, seed) if bootstrap else None
    tail = (1.0 - ci) / 2.0 * 100.0

    def summary(key: str, column: int | None = None) -> dict[str, float | None]:
        value = point[key][0] if column is None else point[key][0, column]
        if draws is None:
            return {"value": _num(value), "ci_low": None, "ci_high": None}
        sample = draws[key] if column is None else draws[key][:, column]
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return {"value": _num(value), "ci_low": None, "ci_high": None}
        low, high = np.percentile(sample, [tail, 100.0 - tail])
        return {"value": _num(value), "ci_low": _num(low), "ci_high": _num(high)}

    confusion = point["confusion"][0].astype(np.int64)
    per_class = {
        name: {
            **{metric: summary(metric, j) for metric in _PER_CLASS},
            "support": int(confusion[j].sum()),
        }
        for j, name in enumerate(names)
    }
    return {
        "n": n,
        "metrics": {metric: summary(metric) for metric in _METRICS},
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": names,
        "kappa_weights": "quadratic" if ordinal else "none",
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "ci": float(ci)},
    }


def paired_difference(
    y_true: np.ndarray,
    probs_a: Sequence[np.ndarray],
    probs_b: Sequence[np.ndarray],
    metrics: Sequence[str] = ("balanced_accuracy", "macro_f1", "macro_auroc"),
    bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """How much better B scores than A on the same samples, with a paired percentile bootstrap interval.

    Each pair ``(probs_a[k], probs_b[k])`` is two models' scores for the same samples (e.g. two methods with
    the same seed). The difference is the mean over pairs of ``metric(B) - metric(A)``. Each bootstrap draw
    resamples the sample indices once and applies them to every model's predictions, so the interval keeps
    the pairing: what both models get right or wrong on the same hard samples cancels out.

    Args:
        y_true: True class indices, shape (N,), shared by every pair.
        probs_a: The baseline's class scores, one (N, C) array per pair.
        probs_b: The other model's class scores, one (N, C) array per pair, in the same order.
        metrics: Which metrics to difference (any of ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
            ``macro_auroc``, ``cohen_kappa``; kappa unweighted).
        bootstrap: Number of resamples; 0 skips the intervals.
        seed: Seed for ``np.random.default_rng``; draw b is ``rng.integers(0, N, size=N)`` in turn.
        ci: Coverage of the interval, in (0, 1).

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}, ..., "pairs": K, "bootstrap": {...}}``; a value or bound
        that no draw defines is ``None``. Draws where the metric is undefined for any model are dropped.

    Raises:
        ValueError: No pairs, unequal pair lists, an unknown metric, or shapes that disagree.
    """
    if not probs_a or len(probs_a) != len(probs_b):
        raise ValueError(f"need one B per A and at least one pair, got {len(probs_a)} and {len(probs_b)}")
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(_METRICS)}")
    if bootstrap < 0 or not 0.0 < ci < 1.0:
        raise ValueError(f"bootstrap must be >= 0 and ci in (0, 1), got {bootstrap} and {ci}")
    models = []
    for probs in (*probs_a, *probs_b):
        y, p, _ = _validate(y_true, probs, [str(j) for j in range(np.shape(probs)[1])])
        models.append((p.argmax(axis=1), p, 1.0 - np.eye(p.shape[1])))

    def differences(counts: np.ndarray) -> dict[str, np.ndarray]:
        scores = [_score_block(counts, y, pred, p, w) for pred, p, w in models]
        half = len(probs_a)
        return {m: np.mean([scores[half + k][m] - scores[k][m] for k in range(half)], axis=0) for m in metrics}

    point = differences(np.ones((1, len(y))))
    draws = [differences(counts) for counts in _resample_counts(len(y), bootstrap, seed)] if bootstrap else []
    tail = (1.0 - ci) / 2.0 * 100.0
    result: dict[str, Any] = {}
    for m in metrics:
        sample = np.concatenate([d[m] for d in draws]) if draws else np.zeros(0)
        sample = sample[np.isfinite(sample)]
        low, high = np.percentile(sample, [tail, 100.0 - tail]) if sample.size else (math.nan, math.nan)
        result[m] = {"value": _num(point[m][0]), "ci_low": _num(low), "ci_high": _num(high)}
    return {**result, "pairs": len(probs_a), "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "ci": ci}}


def predictions_table(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str | os.PathLike[str]],
) -> list[dict[str, Any]]:
    """One row per tile, for the predictions CSV a pathologist filters to review the mistakes.

    Args:
        y_true: True class indices, shape (N,).
        probs: Class scores, shape (N, C).
        class_names: The C class names, in column order.
        paths: The N tile paths, in the same order as ``y_true``.

    Returns:
        Rows with ``path``, ``label``, ``predicted`` (class names), ``correct`` and one ``prob_<class>``
        column per class, in ``class_names`` order.

    Raises:
        ValueError: If the shapes or lengths disagree, or a label is out of range.
    """
    y, p, names = _validate(y_true, probs, class_names, allow_empty=True)
    if len(paths) != len(y):
        raise ValueError(f"got {len(paths)} paths for {len(y)} labels; pass one path per tile, in order")
    pred = p.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    rows = []
    for path, label, guess, scores in zip(paths, y.tolist(), pred.tolist(), p.tolist(), strict=True):
        row: dict[str, Any] = {
            "path": os.fspath(path),
            "label": names[label],
            "predicted": names[guess],
            "correct": label == guess,
        }
        row.update({f"prob_{name}": float(score) for name, score in zip(names, scores, strict=True)})
        rows.append(row)
    return rows


def _validate(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check shapes and ranges once, so the scoring code can trust its inputs."""
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2 or p.shape[1] != len(names):
        raise ValueError(f"probs must have shape (N, {len(names)}) for {len(names)} classes, got {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true must have shape ({len(p)},) to match probs, got {y.shape}")
    if len(y) == 0 and not allow_empty:
        raise ValueError("no predictions to score: y_true is empty")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise ValueError(f"y_true holds class indices outside [0, {len(names)}): {sorted(set(y.tolist()))}")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        first = int(bad.argmax())
        raise ValueError(f"probs has {int(bad.sum())} rows with NaN or inf (first at row {first})")
    return y, p, names


def _quadratic_weights(c: int) -> np.ndarray:
    """Disagreement weights (i - j)^2 over class indices, as scikit-learn's ``weights="quadratic"``."""
    grid = np.arange(c, dtype=np.float64)
    return (grid[:, None] - grid[None, :]) ** 2


def _bootstrap(
    y: np.ndarray, pred: np.ndarray, p: np.ndarray, weights: np.ndarray, resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Score ``resamples`` bootstrap draws, in blocks that bound memory, and stack the results."""
    parts = [_score_block(counts, y, pred, p, weights) for counts in _resample_counts(len(y), resamples, seed)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap draws of ``n`` sample indices, as per-sample counts (B, N), in blocks that bound memory.

    Draw b is ``rng.integers(0, n, size=n)`` for b = 0, 1, ... in turn (the blocks take them in order).
    """
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        k = min(block, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        offsets = (np.arange(k) * n)[:, None]
        yield np.bincount((idx + offsets).ravel(), minlength=k * n).reshape(k, n).astype(np.float64)


def _score_block(
    counts: np.ndarray, y: np.ndarray, pred: np.ndarray, p: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric for a block of resamples, each given as per-sample counts (B, N); NaN = undefined.

    The point estimate is the block with all counts 1, so it shares every rule with the bootstrap.
    """
    b = counts.shape[0]
    c = p.shape[1]
    cell = y * c + pred
    keys = (np.arange(b) * c * c)[:, None] + cell[None, :]
    confusion = np.bincount(keys.ravel(), weights=counts.ravel(), minlength=b * c * c).reshape(b, c, c)

    total = confusion.sum(axis=(1, 2))
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    in_true = support > 0
    in_either = in_true | (predicted > 0)

    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(in_true, tp / support, np.nan)
        f1 = np.where(in_either, 2.0 * tp / (support + predicted), np.nan)
        balanced = np.sum(np.where(in_true, recall, 0.0), axis=1) / in_true.sum(axis=1)
        macro_f1 = np.sum(np.where(in_either, f1, 0.0), axis=1) / in_either.sum(axis=1)

        expected = np.einsum("bi,ij,bj->b", support, weights, predicted) / total
        observed = np.einsum("bij,ij->b", confusion, weights)
        kappa = np.where(expected > 0, 1.0 - observed / expected, np.nan)

    return {
        "confusion": confusion,
        "accuracy": tp.sum(axis=1) / total,
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "macro_auroc": _macro_auroc(counts, y, p),
        "cohen_kappa": kappa,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _macro_auroc(counts: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One-vs-rest Mann-Whitney AUROC per resample, averaged over classes with positives and negatives.

    For class j the samples are sorted by score once and grouped into runs of equal scores. A positive then
    beats every negative in a lower run and ties (counts one half) with the negatives in its own run, so the
    weighted U statistic is a cumulative sum over runs: O(B * N) per class, without re-ranking each resample.
    """
    b = counts.shape[0]
    total = np.zeros(b)
    defined = np.zeros(b)
    by_sample = np.ascontiguousarray(counts.T)  # (N, B): row gathers and sums along axis 0 stay contiguous
    for j in range(p.shape[1]):
        positive = y == j
        if positive.all() or not positive.any():
            continue
        order = np.argsort(p[:, j], kind="stable")
        scores = p[order, j]
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        drawn = by_sample[order]
        pos = drawn * positive[order, None]
        neg = drawn - pos
        if len(starts) < len(scores):  # ties: pool each run of equal scores (skipped when all distinct)
            pos = np.add.reduceat(pos, starts, axis=0)
            neg = np.add.reduceat(neg, starts, axis=0)
        below = np.cumsum(neg, axis=0) - neg
        n_pos = pos.sum(axis=0)
        n_neg = neg.sum(axis=0)
        ok = (n_pos > 0) & (n_neg > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = np.sum(pos * (below + 0.5 * neg), axis=0) / (n_pos * n_neg)
        total += np.where(ok, auc, 0.0)
        defined += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(defined > 0, total / defined, np.nan)


def _num(value: float) -> float | None:
    """A plain float for JSON, or None for an undefined (NaN) value."""
    value = float(value)
    return None if math.isnan(value) else value

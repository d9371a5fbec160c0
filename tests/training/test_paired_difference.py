"""The paired bootstrap difference between two models equals a plain numpy loop over the same draws."""

from __future__ import annotations

import numpy as np
import pytest

from pathotune_cli.training.metrics import paired_difference


def _scores(y: np.ndarray, c: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    logits = rng.normal(size=(len(y), c))
    logits[np.arange(len(y)), y] += strength
    return logits


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    recalls = [np.mean(pred[y == k] == k) for k in np.unique(y)]
    return float(np.mean(recalls))


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    f1 = []
    for k in np.union1d(np.unique(y), np.unique(pred)):
        tp = np.sum((pred == k) & (y == k))
        f1.append(2 * tp / (np.sum(y == k) + np.sum(pred == k)))
    return float(np.mean(f1))


def _reference(y, probs_a, probs_b, metric, resamples, seed):
    """Resample tile indices once per draw; apply them to both models of every pair."""
    def diff(idx: np.ndarray) -> float:
        pairs = zip(probs_a, probs_b, strict=True)
        return float(np.mean([metric(y[idx], b[idx].argmax(1)) - metric(y[idx], a[idx].argmax(1)) for a, b in pairs]))

    rng = np.random.default_rng(seed)
    draws = [diff(rng.integers(0, len(y), size=len(y))) for _ in range(resamples)]
    return diff(np.arange(len(y))), np.percentile(draws, [2.5, 97.5])


@pytest.mark.parametrize(("metric", "reference"), [("balanced_accuracy", _balanced_accuracy), ("macro_f1", _macro_f1)])
def test_paired_difference_and_interval_match_a_numpy_loop(metric: str, reference) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=60)
    probs_a = [_scores(y, 4, rng, 0.5) for _ in range(2)]
    probs_b = [_scores(y, 4, rng, 1.5) for _ in range(2)]
    got = paired_difference(y, probs_a, probs_b, metrics=(metric,), bootstrap=300, seed=7)
    value, (low, high) = _reference(y, probs_a, probs_b, reference, 300, 7)
    assert got[metric]["value"] == pytest.approx(value, abs=1e-12)
    assert (got[metric]["ci_low"], got[metric]["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert got["pairs"] == 2


def test_paired_balanced_accuracy_agrees_with_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=40)
    a, b = _scores(y, 3, rng, 0.3), _scores(y, 3, rng, 2.0)
    got = paired_difference(y, [a], [b], metrics=("balanced_accuracy",), bootstrap=0)
    expected = sklearn_metrics.balanced_accuracy_score(y, b.argmax(1)) - sklearn_metrics.balanced_accuracy_score(
        y, a.argmax(1))
    assert got["balanced_accuracy"]["value"] == pytest.approx(expected, abs=1e-12)
    assert got["balanced_accuracy"]["ci_low"] is None


def test_identical_models_differ_by_exactly_zero_in_every_draw() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=30)
    a = _scores(y, 3, rng, 1.0)
    got = paired_difference(y, [a], [a.copy()], bootstrap=200)
    for metric in ("balanced_accuracy", "macro_f1", "macro_auroc"):
        assert (got[metric]["value"], got[metric]["ci_low"], got[metric]["ci_high"]) == (0.0, 0.0, 0.0)


def test_paired_difference_refuses_unequal_pairs() -> None:
    y = np.zeros(3, dtype=int)
    with pytest.raises(ValueError, match="one B per A"):
        paired_difference(y, [np.zeros((3, 2))], [])

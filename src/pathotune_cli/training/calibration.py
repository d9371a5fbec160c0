"""Calibration: temperature scaling, expected calibration error and the Brier score, in plain numpy.

A probability of 0.9 should mean "right 9 times in 10". Networks trained with cross-entropy are often
over-confident, and a handful of prompt parameters trained on a few hundred tiles even more so. Temperature
scaling (Guo et al., ICML 2017) fixes the commonest form of this with one number fitted after training:

- calibrated probabilities ``p_T(x) = softmax(z(x) / T)`` for logits ``z(x)``;
- ``T > 0`` minimises the validation negative log-likelihood
  ``NLL(T) = (1/N) sum_i [logsumexp(z_i / T) - z_{i,y_i} / T]``. NLL is convex in ``1/T`` (a log-sum-exp of
  functions linear in ``1/T``), so the minimum is unique; it is found by bounded Brent search on ``log T``
  over ``[TEMPERATURE_BOUNDS]``. ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens.
  Two cases cannot place a temperature and keep ``T = 1``, saying why (``note``): every validation tile already
  right (NLL then falls towards 0 as ``T -> 0``, which would make every future prediction certain), and logits
  that do not vary within a tile (NLL does not depend on ``T``).
- Dividing every logit by the same positive number never changes their order: the top class, and so accuracy,
  F1 and kappa, are the same with and without it. Only how sure the model says it is changes.

What it does not promise: calibration holds on average over tiles like the validation tiles (same lab, stain,
scanner, class mix). It is not calibration per class, per slide or under a shift of stain or class balance.

Measures (both computed on whatever probabilities they are given):

- ``expected_calibration_error`` (ECE, Naeini et al. 2015; Guo et al. 2017): confidence ``c_i = max_k p_ik``,
  correctness ``a_i = [argmax_k p_ik == y_i]``; ``B`` equal-width bins of confidence, bin ``b`` holding
  ``c in ((b-1)/B, b/B]`` (confidence 0 falls in the first); ``ECE = sum_b (n_b / N) |mean_b(a) - mean_b(c)|``.
  0 is perfect; it depends on ``B`` (15 here, as Guo et al.) and is biased upward on small sets.
- ``brier_score`` (Brier 1950, multiclass form): ``(1/N) sum_i sum_k (p_ik - [y_i == k])^2``, in ``[0, 2]``;
  lower is better. Unlike ECE it also rewards sharp, correct probabilities (it is a proper scoring rule).

Bootstrap intervals reduce each resample to a count per sample, as ``training.metrics`` does: the ECE and Brier
of a block of resamples are then matrix products, whatever N is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.01, 100.0)
"""The search interval for T; a fit at a bound is reported (``at_bound``): the data could not place it."""
_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the validation NLL before (T = 1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    at_bound: bool
    """True when the minimiser sits at an end of ``TEMPERATURE_BOUNDS`` (confidently wrong everywhere: T -> inf)."""
    note: str = ""
    """Why ``T = 1`` was kept when the validation tiles cannot place a temperature (empty otherwise)."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row, in float64, stable for large logits."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood ``(1/N) sum_i -log softmax(z_i / T)_{y_i}``."""
    z = np.asarray(logits, np.float64) / float(temperature)
    y = np.asarray(labels, np.int64)
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


MIN_TEMPERATURE_ITEMS = 10
"""Fewer validation items than this fit no temperature (our choice: one item more or less then moves T by a
large factor, and a 1-slide fit once ran to the search bound, every probability 0.50, with an ECE that looked
perfect); ``T = 1`` is kept and the file says the probabilities are not calibrated."""


def fit_temperature(logits: np.ndarray, labels: np.ndarray, unit: str = "tiles") -> TemperatureFit:
    """The temperature that minimises validation NLL (bounded Brent search on ``log T``).

    No temperature (``T = 1`` with a ``note``) from fewer than ``MIN_TEMPERATURE_ITEMS`` items, from items the
    model gets all right, or where the search runs to an end of ``TEMPERATURE_BOUNDS``.

    Args:
        logits: (N, C) validation logits of un-augmented tiles (or slides).
        labels: (N,) true class indices.
        unit: What the items are, for the notes (``tiles``, ``slides``).

    Raises:
        ValueError: no samples, or shapes that disagree.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check(logits, labels)
    before = nll(z, y)
    if len(y) < MIN_TEMPERATURE_ITEMS:
        return TemperatureFit(1.0, before, before, False, f"{len(y)} validation {unit} are too few to fit a "
                              f"temperature (needs at least {MIN_TEMPERATURE_ITEMS}); probabilities are not calibrated")
    if (z.argmax(axis=1) == y).all():
        return TemperatureFit(1.0, before, before, False, f"all {len(y)} validation {unit} are right: their NLL "
                              "keeps falling as T -> 0, so they cannot place a temperature; kept T = 1")
    if np.ptp(z, axis=1).max() <= 0:
        return TemperatureFit(1.0, before, before, False, f"the logits do not vary within one of the {unit}: NLL "
                              "does not depend on T; kept T = 1")
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    found = minimize_scalar(lambda t: nll(z, y, math.exp(t)), bounds=(low, high), method="bounded",
                            options={"xatol": 1e-6})
    t = float(found.x)
    temperature = math.exp(t)
    if min(t - low, high - t) < 1e-3:
        return TemperatureFit(1.0, before, before, True, f"the fit on {len(y)} validation {unit} ran to the end of "
                              f"its search interval (T = {temperature:.3g}): they cannot place a temperature; kept "
                              "T = 1, probabilities are not calibrated")
    return TemperatureFit(temperature, before, nll(z, y, temperature), False)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width confidence bins (the module docstring gives the formula)."""
    index, gap, _, _ = _per_sample(probs, labels, bins)
    return float(_ece_block(np.ones((1, len(index))), index, gap, bins)[0])


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score ``(1/N) sum_i sum_k (p_ik - [y_i == k])^2``."""
    return float(np.mean(_brier_per_sample(np.asarray(probs, np.float64), np.asarray(labels, np.int64))))


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per confidence bin: its bounds, tile count, mean confidence and accuracy (None for an empty bin)."""
    index, gap, correct, confidence = _per_sample(probs, labels, bins)
    rows = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        rows.append({
            "low": b / bins, "high": (b + 1) / bins, "count": n,
            "confidence": float(confidence[members].mean()) if n else None,
            "accuracy": float(correct[members].mean()) if n else None,
        })
    return rows


def calibration_metrics(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS, bootstrap: int = 1000, seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """ECE and Brier score with percentile-bootstrap intervals, and the reliability table.

    Args:
        probs: (N, C) probabilities (rows summing to 1).
        labels: (N,) true class indices.
        bins: Equal-width confidence bins for ECE.
        bootstrap: Resamples for the intervals; 0 skips them.
        seed: Seed of ``np.random.default_rng``.
        ci: Interval coverage.

    Returns:
        ``{"ece": {value, ci_low, ci_high}, "brier": {...}, "nll": float, "bins": int, "reliability": [...]}``
        (``nll`` of the given probabilities, clipped at 1e-12).
    """
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    index, gap, _, _ = _per_sample(p, y, bins)
    brier = _brier_per_sample(p, y)
    point = {"ece": _ece_block(np.ones((1, len(y))), index, gap, bins)[0], "brier": float(brier.mean())}
    draws: dict[str, list[np.ndarray]] = {"ece": [], "brier": []}
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // max(1, len(y)))
    for start in range(0, bootstrap, block):
        k = min(block, bootstrap - start)
        counts = _resample_counts(rng, len(y), k)
        draws["ece"].append(_ece_block(counts, index, gap, bins))
        draws["brier"].append(counts @ brier / counts.sum(axis=1))
    tail = (1.0 - ci) / 2.0 * 100.0

    def summary(key: str) -> dict[str, float | None]:
        if not bootstrap:
            return {"value": float(point[key]), "ci_low": None, "ci_high": None}
        low, high = np.percentile(np.concatenate(draws[key]), [tail, 100.0 - tail])
        return {"value": float(point[key]), "ci_low": float(low), "ci_high": float(high)}

    log_p = np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))
    return {"ece": summary("ece"), "brier": summary("brier"), "nll": float(-log_p.mean()), "bins": bins,
            "reliability": reliability_table(p, y, bins)}


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or y.shape != (len(z),):
        raise ValueError(f"logits must be (N, C) and labels (N,), got {z.shape} and {y.shape}")
    if not len(y):
        raise ValueError("no validation samples to fit a temperature on")
    return z, y


def _per_sample(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Bin index, (correct - confidence), correctness and confidence of each sample."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return index, correct - confidence, correct, confidence


def _ece_block(counts: np.ndarray, index: np.ndarray, gap: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each resample, given as counts per sample (K, N): ``sum_b |sum_{i in b} w_i gap_i| / sum w``."""
    by_bin = np.zeros((len(index), bins))
    by_bin[np.arange(len(index)), index] = gap
    return np.abs(counts @ by_bin).sum(axis=1) / counts.sum(axis=1)


def _brier_per_sample(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return ((p - onehot) ** 2).sum(axis=1)


def _resample_counts(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` bootstrap resamples of ``n`` samples, each as how often every sample was drawn (k, n)."""
    idx = rng.integers(0, n, size=(k, n))
    offsets = (np.arange(k) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=k * n).reshape(k, n).astype(np.float64)

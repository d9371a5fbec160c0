"""Split conformal prediction sets with the softmax-threshold (LAC) score, in plain numpy.

Instead of one class, a prediction set: every class the model cannot rule out at level ``alpha``. On a tile
like the calibration tiles the true class is in the set at least ``1 - alpha`` of the time, whatever the model,
however badly trained; a poor model pays with larger sets, not with lost coverage.

The recipe (Vovk et al. 2005; Papadopoulos et al. 2002; the score of Sadinle, Lei and Wasserman 2019, "least
ambiguous set-valued classifiers", LAC):

- score of a tile with true class ``y``: ``s = 1 - p_y``, with ``p`` the *calibrated* probabilities;
- on ``n`` calibration (validation) tiles, ``q = s_(k)``, the ``k``-th smallest score, ``k = ceil((n+1)(1-alpha))``:
  the finite-sample quantile at level ``k / n``. When ``k > n`` (``n < 1/alpha - 1``: fewer than 19 tiles for
  alpha 0.05, 9 for 0.1, 4 for 0.2) no finite quantile gives the guarantee: none is stored, with that reason;
- prediction set of a new tile: ``{k : 1 - p_k <= q}``, i.e. every class with ``p_k >= 1 - q``.

Guarantee: if the calibration tiles and the new tile are exchangeable (drawn the same way from the same
population: same lab, stain, scanner, class mix), ``P(y in set) >= 1 - alpha``, and ``<= 1 - alpha + 1/(n+1)``
when scores do not tie. It is marginal (on average over tiles), not per class, per slide or per patient; it is
about the draw of the calibration set too, so one small validation set can land above or below. Here the same
validation tiles also chose the best epoch and the temperature, one more reason to read it as approximate.
A LAC set can be empty (no class reaches ``1 - q``): the model then holds no class plausible at that level,
which is itself a reason to look at the tile. LAC gives the smallest sets on average among set rules with the
guarantee; its coverage can be uneven between easy and hard classes (APS evens this out at the cost of larger
sets; not implemented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCORE = "lac"
"""The stored score's name: ``1 - calibrated probability of the true class``."""
ALPHAS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Quantile:
    """The conformal quantile for one ``alpha``, or None with the reason."""

    alpha: float
    value: float | None
    rank: int
    """``k = ceil((n+1)(1-alpha))``: which order statistic of the scores ``value`` is."""
    n: int
    reason: str = ""


def lac_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nonconformity scores ``1 - p_{i, y_i}`` (N,)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    return 1.0 - p[np.arange(len(y)), y]


def quantile_rank(n: int, alpha: float) -> int:
    """``ceil((n+1)(1-alpha))``, rounded first so that 10 * 0.9 counts as 9, not 9.000000000000002."""
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def min_samples(alpha: float) -> int:
    """The fewest calibration tiles for which a finite quantile exists at ``alpha``."""
    n = 1
    while quantile_rank(n, alpha) > n:
        n += 1
    return n


def conformal_quantile(scores: np.ndarray, alpha: float, unit: str = "tiles") -> Quantile:
    """The split-conformal quantile of ``scores`` at level ``alpha`` (the module docstring gives the rule).

    Raises:
        ValueError: ``alpha`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    k = quantile_rank(n, alpha)
    if k > n:
        need = min_samples(alpha)
        return Quantile(alpha, None, k, n,
                        f"{n} validation {unit} are too few for alpha {alpha:g} (needs at least {need})")
    return Quantile(alpha, float(s[k - 1]), k, n)


def prediction_sets(probs: np.ndarray, quantile: float) -> np.ndarray:
    """Membership (N, C) bool: class ``k`` is in tile ``i``'s set when ``1 - p_ik <= quantile``."""
    return (1.0 - np.asarray(probs, np.float64)) <= quantile


def coverage_and_size(sets: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Empirical coverage (share of tiles whose true class is in its set) and mean set size."""
    y = np.asarray(labels, np.int64)
    member = np.asarray(sets, bool)
    if not len(y):
        return math.nan, math.nan
    return float(member[np.arange(len(y)), y].mean()), float(member.sum(axis=1).mean())


def join_set(member: np.ndarray, class_names: list[str]) -> str:
    """One tile's set as class names joined by ``|`` in class order (empty string for an empty set)."""
    return "|".join(name for name, inside in zip(class_names, member, strict=True) if inside)

"""Out-of-distribution scores: Mahalanobis distance of pre-logit features to the class means, in plain numpy.

A classifier always answers with one of its classes, even for a tile of another stain, another organ, pen
marks or glass. The score here (Lee et al., NeurIPS 2018, "a simple unified framework for detecting
out-of-distribution samples", on the features the head reads) says how unlike the training tiles a tile is:

- features ``f(x)``: the prompted model's pooled, normed features (``PromptedModel.features``), the head's input;
- class means ``mu_k`` over the (un-augmented) training tiles of class ``k``; one covariance shared by every
  class, ``S = (1/n) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T``, the within-class scatter;
- shrunk towards a multiple of the identity so that it is invertible with fewer tiles than feature dimensions
  (few-shot): ``Sigma = (1 - lam) S + lam m I``, ``m = tr(S) / d``, with the Ledoit-Wolf (2004) ``lam`` estimated
  from the same residuals (at least ``MIN_SHRINKAGE``);
- score ``ood(x) = min_k sqrt((f - mu_k)^T Sigma^-1 (f - mu_k))``: the distance, in within-class standard
  deviations, to the nearest class. High means unlike every class seen in training.

``Sigma`` is kept as its eigendecomposition: ``Sigma = U diag(e) U^T + a (I - U U^T)``, where ``U`` (d x r)
spans the residuals (r <= min(n, d)), ``e = (1 - lam) s + a`` and ``a = lam m``. Then
``(f - mu)^T Sigma^-1 (f - mu) = sum_j (u_j^T v)^2 / e_j + |v - U U^T v|^2 / a`` with ``v = f - mu``: exact, and
only ``d x r`` numbers to store (a prompt file stays small when tiles are few).

The flag: ``score > threshold``, the threshold the ``k``-th smallest of ``n`` held-out validation scores,
``k = ceil((n+1)(1 - rate))``; for a new in-distribution tile exchangeable with them, the chance of a false flag
is ``(n+1-k)/(n+1) <= rate`` (``false_flag_bound``). With too few validation tiles for ``rate`` the largest
validation score is the threshold and the bound is ``1/(n+1)``, stated, not hidden.

What it does not promise: which tiles count as "out" is not guaranteed (no OOD tiles were seen), the score
measures distance in the model's own feature space (a stain shift the features ignore is not flagged), and a
slide of an unseen tumour type can sit close to a training class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SHRINKAGE = 1e-4
FALSE_FLAG_RATE = 0.05
_NULL = 1e-10
"""Residual directions with variance below this share of the largest are treated as absent."""


@dataclass(frozen=True)
class MahalanobisFit:
    """Class means and the shrunk shared covariance in factored form (the module docstring gives the formulas)."""

    means: np.ndarray
    """(K, d), one row per class that had training tiles, in ``classes`` order."""
    classes: tuple[int, ...]
    basis: np.ndarray
    """(d, r) orthonormal ``U``."""
    variances: np.ndarray
    """(r,) ``e``: the shrunk covariance's eigenvalues along ``U``."""
    residual_variance: float
    """``a``: its eigenvalue in every direction orthogonal to ``U``."""
    shrinkage: float
    fit_images: int


@dataclass(frozen=True)
class FlagThreshold:
    """Where the flag starts, and what it promises."""

    threshold: float
    rate: float
    """The false-flag rate asked for."""
    bound: float
    """What the threshold guarantees on exchangeable in-distribution tiles: ``(n+1-k)/(n+1)``."""
    n: int
    note: str = ""


def ledoit_wolf_shrinkage(residuals: np.ndarray) -> float:
    """The Ledoit-Wolf shrinkage of ``S = X^T X / n`` towards ``(tr S / d) I`` for centred rows ``X`` (n, d).

    ``lam = min(b2, d2) / d2`` with ``d2 = |S - m I|_F^2 / d`` and ``b2 = (sum_i |x_i|^4 / n - |S|_F^2) / (n d)``
    (as scikit-learn's ``ledoit_wolf_shrinkage``); 1 when there is one sample or no spread.
    """
    x = np.asarray(residuals, np.float64)
    n, d = x.shape
    gram = x @ x.T if n <= d else x.T @ x
    frob = float((gram**2).sum()) / n**2
    trace = float((x**2).sum()) / n
    d2 = (frob - trace**2 / d) / d
    b2 = (float(((x**2).sum(axis=1) ** 2).sum()) / n - frob) / (n * d)
    if n < 2 or d2 <= 0:
        return 1.0
    return float(min(max(b2, 0.0), d2) / d2)


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, num_classes: int) -> MahalanobisFit:
    """Class means and shared shrunk covariance of training features.

    Args:
        features: (n, d) pre-logit features of un-augmented training tiles.
        labels: (n,) their classes.
        num_classes: C; classes without tiles get no mean (a tile is never "near" them).

    Raises:
        ValueError: no features, or features without any spread.
    """
    f = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    if f.ndim != 2 or len(f) != len(y) or not len(y):
        raise ValueError(f"need (n, d) features and (n,) labels, got {f.shape} and {y.shape}")
    classes = tuple(int(k) for k in range(num_classes) if (y == k).any())
    means = np.stack([f[y == k].mean(axis=0) for k in classes])
    residuals = f - means[np.searchsorted(classes, y)]
    n, d = residuals.shape
    lam = max(ledoit_wolf_shrinkage(residuals), MIN_SHRINKAGE)
    _, sigma, vt = np.linalg.svd(residuals, full_matrices=False)
    spread = sigma**2 / n
    m = float(spread.sum()) / d
    if m <= 0:
        raise ValueError("the training features have no spread: every tile maps to its class mean")
    keep = spread > _NULL * spread.max()
    a = lam * m
    return MahalanobisFit(
        means=means, classes=classes, basis=vt[keep].T.copy(), variances=(1.0 - lam) * spread[keep] + a,
        residual_variance=a, shrinkage=lam, fit_images=n,
    )


def mahalanobis_scores(features: np.ndarray, fit: MahalanobisFit) -> np.ndarray:
    """``min_k`` Mahalanobis distance of each row of ``features`` (N, d) to the class means: (N,)."""
    f = np.asarray(features, np.float64)
    u = np.asarray(fit.basis, np.float64)
    e = np.asarray(fit.variances, np.float64)
    means = np.asarray(fit.means, np.float64)
    pf, pm = f @ u, means @ u  # coordinates along U: (N, r), (K, r)

    def squared(x: np.ndarray, c: np.ndarray, w: np.ndarray | float) -> np.ndarray:
        """``sum_j w_j (x_j - c_j)^2`` for every row of x and of c, (N, K), expanded to stay (N, K) in memory."""
        return (x**2 * w).sum(1)[:, None] - 2 * (x * w) @ c.T + (c**2 * w).sum(1)[None]

    inside = np.clip(squared(pf, pm, 1.0 / e), 0.0, None)
    outside = np.clip(squared(f, means, 1.0) - squared(pf, pm, 1.0), 0.0, None) / fit.residual_variance
    return np.sqrt((inside + outside).min(axis=1))


def flag_threshold(scores: np.ndarray, rate: float = FALSE_FLAG_RATE) -> FlagThreshold:
    """The threshold on held-out in-distribution ``scores`` with false-flag rate at most ``rate``.

    Raises:
        ValueError: no scores, or ``rate`` outside (0, 1).
    """
    from pathotune_cli.training.conformal import min_samples, quantile_rank

    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must lie in (0, 1), got {rate}")
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if not n:
        raise ValueError("no validation scores to set a threshold on")
    k = quantile_rank(n, rate)
    note = ""
    if k > n:
        k = n
        note = (f"{n} validation tiles are too few for a {rate:.0%} false-flag rate (needs {min_samples(rate)}): "
                f"the threshold is their largest score, bounding false flags by 1/(n+1) = {1 / (n + 1):.1%}")
    return FlagThreshold(float(s[k - 1]), rate, (n + 1 - k) / (n + 1), n, note)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(out score > in score), ties counting one half: how well the score ranks OOD tiles above the rest."""
    a = np.asarray(in_scores, np.float64)
    b = np.asarray(out_scores, np.float64)
    if not len(a) or not len(b):
        return math.nan
    greater = (b[:, None] > a[None]).mean()
    ties = (b[:, None] == a[None]).mean()
    return float(greater + 0.5 * ties)

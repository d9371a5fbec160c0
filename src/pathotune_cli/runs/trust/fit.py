"""``tune``'s last step: fit the trust section on the validation split after training.

On un-augmented tiles, with the best epoch's tensors loaded: the temperature on the validation logits (ECE,
Brier and NLL before and after), the split-conformal quantiles of the calibrated LAC score for each stored
alpha, and the OOD statistics (class means and shared covariance of the *training* tiles' pre-logit features;
the flag threshold on the *validation* tiles' scores, which the means never saw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.events import Reporter, ignore, note, warn

if TYPE_CHECKING:
    from pathotune_cli.engine.trust import TrustStats

OOD_FIT_MAX = 20_000
"""At most this many training tiles (a seeded random subset) give the OOD means and covariance."""


@dataclass(frozen=True)
class FittedTrust:
    """The header section, its tensors, and a flat summary for ``metrics.json`` and ``run.json``."""

    stats: Any
    """``engine.trust.TrustStats``."""
    tensors: dict[str, Any]
    summary: dict[str, Any]


def fit_trust(
    val_logits: np.ndarray, val_labels: np.ndarray, val_features: np.ndarray | None,
    train_features: np.ndarray | None, train_labels: np.ndarray | None, class_names: list[str],
    report: Reporter = ignore, unit: str = "tiles",
) -> FittedTrust:
    """Temperature, conformal quantiles and (with features) OOD statistics.

    Args:
        val_logits: (n, C) validation logits.
        val_labels: (n,) validation classes.
        val_features: (n, d) validation pre-logit features, or None to skip OOD.
        train_features: (m, d) training pre-logit features, or None to skip OOD.
        train_labels: (m,) their classes.
        class_names: The task's classes.
        report: Receives notes and warnings (too few tiles for a level, an OOD fit that failed).
        unit: What the validation items are (``tiles``, ``slides``), for the messages.
    """
    from pathotune_cli.engine.trust import CalibrationStats, ConformalQuantileStats, ConformalStats, TrustStats
    from pathotune_cli.training.calibration import (
        ECE_BINS,
        brier_score,
        expected_calibration_error,
        fit_temperature,
        softmax,
    )
    from pathotune_cli.training.conformal import ALPHAS, conformal_quantile, lac_scores

    fit = fit_temperature(val_logits, val_labels, unit)
    raw, calibrated = softmax(val_logits), softmax(val_logits, fit.temperature)
    calibration = CalibrationStats(
        temperature=fit.temperature, at_bound=fit.at_bound, note=fit.note, validation_images=len(val_labels),
        nll_before=fit.nll_before, nll_after=fit.nll_after, ece_bins=ECE_BINS,
        ece_before=expected_calibration_error(raw, val_labels),
        ece_after=expected_calibration_error(calibrated, val_labels),
        brier_before=brier_score(raw, val_labels), brier_after=brier_score(calibrated, val_labels),
    )
    if fit.note:
        warn(report, f"temperature: {fit.note}")
    elif fit.at_bound:
        warn(report, f"the temperature stopped at {fit.temperature:.3g}, an end of its search interval")
    scores = lac_scores(calibrated, val_labels)
    levels = []
    for alpha in ALPHAS:
        q = conformal_quantile(scores, alpha, unit)
        if q.value is None:
            warn(report, f"no prediction sets at alpha {alpha:g}: {q.reason}")
        levels.append(ConformalQuantileStats(alpha=alpha, quantile=q.value, rank=q.rank, reason=q.reason))
    conformal = ConformalStats(validation_images=len(val_labels), levels=levels)
    ood, tensors = _fit_ood(val_features, train_features, train_labels, class_names, report)
    stats = TrustStats(calibration=calibration, conformal=conformal, ood=ood)
    return FittedTrust(stats, tensors, _summary(stats))


def subset_for_ood(n: int, seed: int) -> np.ndarray:
    """Indices of the training tiles whose features fit the OOD statistics: all, or ``OOD_FIT_MAX`` of them."""
    if n <= OOD_FIT_MAX:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed + 4049).choice(n, OOD_FIT_MAX, replace=False))


def _fit_ood(val_features: np.ndarray | None, train_features: np.ndarray | None, train_labels: np.ndarray | None,
             class_names: list[str], report: Reporter) -> tuple[Any, dict[str, Any]]:
    import torch

    from pathotune_cli.engine.trust import OOD_TENSORS, OodStats
    from pathotune_cli.training.ood import FALSE_FLAG_RATE, fit_mahalanobis, flag_threshold, mahalanobis_scores

    if val_features is None or train_features is None or train_labels is None:
        return None, {}
    try:
        fit = fit_mahalanobis(train_features, train_labels, len(class_names))
    except ValueError as exc:
        warn(report, f"no OOD statistics: {exc}")
        return None, {}
    threshold = flag_threshold(mahalanobis_scores(val_features, fit), FALSE_FLAG_RATE)
    if threshold.note:
        warn(report, f"OOD flag: {threshold.note}")
    note(report, f"OOD flag: Mahalanobis distance above {threshold.threshold:.3g} (false flags at most "
                 f"{threshold.bound:.1%} on tiles like the validation tiles)")
    stats = OodStats(
        classes=[class_names[k] for k in fit.classes], fit_images=fit.fit_images, shrinkage=fit.shrinkage,
        residual_variance=fit.residual_variance, threshold=threshold.threshold, false_flag_rate=threshold.rate,
        false_flag_bound=threshold.bound, validation_images=threshold.n, note=threshold.note,
    )
    arrays = (fit.means, fit.basis, fit.variances)
    return stats, {name: torch.from_numpy(np.ascontiguousarray(a, np.float32)) for name, a in zip(OOD_TENSORS, arrays,
                                                                                                  strict=True)}


def _summary(stats: TrustStats) -> dict[str, Any]:
    c = stats.calibration
    out: dict[str, Any] = {
        "temperature": c.temperature, "validation_images": c.validation_images, "ece_bins": c.ece_bins,
        "ece_before": c.ece_before, "ece_after": c.ece_after, "nll_before": c.nll_before, "nll_after": c.nll_after,
        "brier_before": c.brier_before, "brier_after": c.brier_after,
        "conformal_score": stats.conformal.score,
        "conformal_quantiles": {f"{q.alpha:g}": q.quantile for q in stats.conformal.levels},
    }
    if stats.ood is not None:
        out.update(ood_threshold=stats.ood.threshold, ood_false_flag_bound=stats.ood.false_flag_bound)
    return out

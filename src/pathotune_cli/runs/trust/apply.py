"""Trust at prediction time: a prompt file's trust section applied to logits and features.

``predict``, ``eval`` and ``explain`` share it. Probabilities are calibrated (``softmax(z / T)``) by default and
raw with ``--uncalibrated``; prediction sets always use the calibrated probabilities, because the stored
conformal quantiles were computed on them. A prompt file without the section (older, or tuned without a
validation split) gives the raw softmax, and ``notice`` is the one line that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from pathotune_cli.engine import PromptFile
    from pathotune_cli.engine.trust import TrustStats
    from pathotune_cli.training.ood import MahalanobisFit

UNCERTAIN = "Uncertain"
"""The QuPath classification of a tile flagged out of distribution."""

Columns = dict[str, "np.ndarray | list[str]"]
"""Per-tile outputs by name (``tile_columns``): arrays, and the prediction sets as text."""


@dataclass(frozen=True)
class Trust:
    """What a run applies: the temperature, the quantile for ``alpha`` and the OOD statistics, where present."""

    stats: TrustStats | None
    calibrate: bool
    alpha: float | None = None
    quantile: float | None = None
    ood: MahalanobisFit | None = None
    notice: str | None = None
    """One line for the user when the file has no trust section (None when it has one)."""

    @property
    def temperature(self) -> float:
        """The fitted temperature (1 without a trust section)."""
        return self.stats.calibration.temperature if self.stats is not None else 1.0

    @property
    def calibrated(self) -> bool:
        """Whether reported probabilities are calibrated (a temperature was fitted: none from too few items)."""
        return self.calibrate and self.stats is not None and not self.stats.calibration.note

    @property
    def has_ood(self) -> bool:
        """Whether OOD scores and flags can be computed."""
        return self.ood is not None

    @property
    def ood_threshold(self) -> float | None:
        """Scores above it are flagged."""
        return self.stats.ood.threshold if self.stats is not None and self.stats.ood is not None else None

    def describe(self) -> str:
        """What the reported probabilities are, in a few words."""
        if self.stats is None:
            return "raw softmax probabilities (no calibration in this prompt file)"
        if not self.calibrate:
            return f"raw softmax probabilities (--uncalibrated; the file's temperature is {self.temperature:.3g})"
        if self.stats.calibration.note:
            return f"raw softmax probabilities (no temperature: {self.stats.calibration.note})"
        return f"calibrated probabilities (temperature {self.temperature:.3g})"

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Reported probabilities (N, C): calibrated unless ``--uncalibrated`` or the file has no temperature."""
        from pathotune_cli.training.calibration import softmax

        return softmax(logits, self.temperature if self.calibrated else 1.0)

    def sets(self, logits: np.ndarray) -> np.ndarray | None:
        """Prediction-set membership (N, C) at ``alpha`` on the calibrated probabilities, or None without alpha."""
        from pathotune_cli.training.calibration import softmax
        from pathotune_cli.training.conformal import prediction_sets

        if self.quantile is None:
            return None
        return prediction_sets(softmax(logits, self.temperature), self.quantile)

    def ood_scores(self, features: np.ndarray) -> np.ndarray | None:
        """OOD scores (N,) of pre-logit features, or None when the file has no OOD statistics."""
        from pathotune_cli.training.ood import mahalanobis_scores

        return mahalanobis_scores(features, self.ood) if self.ood is not None else None


def load_trust(file: PromptFile, *, uncalibrated: bool = False, alpha: float | None = None) -> Trust:
    """The trust a run applies, from the prompt file's header and ``trust.*`` tensors.

    Raises:
        BadInput: ``alpha`` asked for but the file holds no quantile at that level (none stored, another level,
            or too few validation tiles: the stored reason is given).
    """
    stats = file.header.trust
    if stats is None:
        if alpha is not None:
            raise BadInput(
                f"{file.path} holds no conformal quantiles (made before pathotune kept them, or tuned without a "
                "validation split), so --alpha cannot make prediction sets",
                "re-run `pathotune tune` with a validation split, or drop --alpha",
            )
        return Trust(None, not uncalibrated, notice=(
            f"calibration is not available in {file.path.name} (made before pathotune kept it, or tuned without "
            "validation): probabilities are the raw softmax, with no prediction sets or OOD flags"))
    return Trust(stats, not uncalibrated, alpha, _quantile(file, stats, alpha), _ood_fit(file, stats))


def tile_columns(trust: Trust, logits: np.ndarray, ood_scores: np.ndarray | None,
                 class_names: list[str]) -> Columns:
    """Per-tile outputs every writer shares: probabilities, top class, set and OOD columns where available.

    Returns:
        ``probs`` (N, C); ``labels`` (N,); and where present ``sets`` (N, C) bool, ``prediction_set`` (names
        joined by ``|``), ``set_size``, ``ood_score`` and ``ood`` (bool).
    """
    from pathotune_cli.training.conformal import join_set

    probs = trust.probabilities(logits)
    out: Columns = {"probs": probs, "labels": probs.argmax(1) if len(probs) else np.zeros(0, int)}
    sets = trust.sets(logits)
    if sets is not None:
        out.update(sets=sets, prediction_set=[join_set(row, class_names) for row in sets],
                   set_size=sets.sum(axis=1).astype(int))
    if ood_scores is not None and trust.ood_threshold is not None:
        out.update(ood_score=np.asarray(ood_scores, np.float64), ood=np.asarray(ood_scores) > trust.ood_threshold)
    return out


def extra_headers(columns: Columns) -> list[str]:
    """CSV columns after the probabilities, in a fixed order, for the keys present."""
    return [k for k in ("prediction_set", "set_size", "ood_score", "ood") if k in columns]


def extra_values(columns: Columns, i: int) -> list[object]:
    """Tile ``i``'s values of ``extra_headers`` as CSV cells."""
    cells: list[object] = []
    for key in extra_headers(columns):
        value = columns[key][i]
        cells.append(f"{value:.4f}" if key == "ood_score" else int(value) if key in ("set_size", "ood") else value)
    return cells


def _quantile(file: PromptFile, stats: TrustStats, alpha: float | None) -> float | None:
    if alpha is None:
        return None
    level = stats.conformal.level(alpha)
    stored = ", ".join(f"{q.alpha:g}" for q in stats.conformal.levels)
    if level is None:
        raise BadInput(f"{file.path} holds conformal quantiles for alpha {stored}, not {alpha:g}",
                       f"pass --alpha {stored.split(', ')[0]} (or another stored level)")
    if level.quantile is None:
        usable = [f"{q.alpha:g}" for q in stats.conformal.levels if q.quantile is not None]
        fix = f"pass --alpha {usable[0]}" if usable else "tune with a larger validation split"
        raise BadInput(f"{file.path}: no prediction sets at alpha {alpha:g}: {level.reason}", fix)
    return level.quantile


def _ood_fit(file: PromptFile, stats: TrustStats) -> MahalanobisFit | None:
    from pathotune_cli.engine.trust import OOD_TENSORS
    from pathotune_cli.training.ood import MahalanobisFit

    if stats.ood is None:
        return None
    means, basis, variances = (file.tensors[k].double().numpy() for k in OOD_TENSORS)
    classes = tuple(file.header.classes.index(c) for c in stats.ood.classes)
    return MahalanobisFit(means, classes, basis, variances, stats.ood.residual_variance, stats.ood.shrinkage,
                          stats.ood.fit_images)

"""The prompt file's trust section: what ``predict`` and ``eval`` need to weigh a prediction.

Fitted by ``tune`` on the validation split after training (``runs.trust.fit``): a temperature for calibrated
probabilities, split-conformal quantiles for prediction sets, and the statistics of an out-of-distribution
score. The numbers live in the header (``PromptHeader.trust``); the OOD class means and covariance factors are
tensors in the same safetensors file, named ``trust.ood.*``, covered by the same checksum. The formulas are in
``training.calibration``, ``training.conformal`` and ``training.ood``.

A file without the section (made before it existed, or tuned without a validation split) still loads: its
probabilities are the raw softmax, and the commands say so in one line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pathotune_cli.config.schema import Strict

TENSOR_PREFIX = "trust."
OOD_TENSORS = ("trust.ood.means", "trust.ood.basis", "trust.ood.variances")
"""(K, d) class means, (d, r) basis U, (r,) variances e: see ``training.ood``."""


class CalibrationStats(Strict):
    """Temperature scaling, fitted by minimising validation NLL."""

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0)
    at_bound: bool = False
    """The fit stopped at an end of the search interval."""
    note: str = ""
    """Why the temperature was kept at 1 when the validation tiles could not place one."""
    validation_images: int = Field(ge=1)
    nll_before: float
    nll_after: float
    ece_bins: int = Field(15, ge=1)
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float


class ConformalQuantileStats(Strict):
    """One level's quantile of the conformal scores, or None with the reason (too few validation tiles)."""

    alpha: float = Field(gt=0, lt=1)
    quantile: float | None
    rank: int
    reason: str = ""

    @model_validator(mode="after")
    def _reason_when_missing(self) -> ConformalQuantileStats:
        if self.quantile is None and not self.reason:
            raise ValueError(f"conformal quantile for alpha {self.alpha} is missing without a reason")
        return self


class ConformalStats(Strict):
    """Split-conformal quantiles of the LAC score ``1 - calibrated p(true class)`` on the validation tiles."""

    score: Literal["lac"] = "lac"
    validation_images: int = Field(ge=1)
    levels: list[ConformalQuantileStats]

    def level(self, alpha: float) -> ConformalQuantileStats | None:
        """The stored level closest to ``alpha`` within 1e-9, or None."""
        return next((q for q in self.levels if abs(q.alpha - alpha) < 1e-9), None)


class OodStats(Strict):
    """A Mahalanobis OOD score on the pre-logit features, and its flag threshold."""

    score: Literal["mahalanobis"] = "mahalanobis"
    features: str = "pooled pre-logit features (PromptedModel.features)"
    classes: list[str]
    """The classes with a mean (those with training tiles), in the order of ``trust.ood.means``."""
    fit_images: int = Field(ge=1)
    shrinkage: float = Field(ge=0, le=1)
    residual_variance: float = Field(gt=0)
    threshold: float
    false_flag_rate: float = Field(gt=0, lt=1)
    false_flag_bound: float = Field(ge=0, le=1)
    validation_images: int = Field(ge=1)
    note: str = ""


class TrustStats(Strict):
    """Everything ``predict`` and ``eval`` need to calibrate, build sets and flag tiles."""

    split: str = "validation"
    calibration: CalibrationStats
    conformal: ConformalStats
    ood: OodStats | None = None

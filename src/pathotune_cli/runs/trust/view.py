"""Typed views of the trust section of ``metrics.json`` (``runs.trust.report``), for whoever shows it.

The section stays plain data where it is written (``metrics.json``, ``--json``); these read it once into
attributes, so a reader never indexes it by string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pathotune_cli.runs.results import Metric

Section = Mapping[str, object]


@dataclass(frozen=True)
class CalibrationSet:
    """ECE and Brier score (with intervals) of one set of probabilities, and the ECE's bin count."""

    ece: Metric
    brier: Metric
    bins: int

    @classmethod
    def of(cls, part: Section) -> CalibrationSet:
        """From one part (``raw`` or ``calibrated``) of the calibration section."""
        return cls(Metric.of(_section(part, "ece")), Metric.of(_section(part, "brier")), _int(part.get("bins")))


@dataclass(frozen=True)
class Calibration:
    """Which probabilities the metrics use, the fitted temperature, and the raw and calibrated measures."""

    probabilities: str
    temperature: float | None
    raw: CalibrationSet | None
    calibrated: CalibrationSet | None

    def rows(self) -> list[tuple[str, str, Metric]]:
        """(probabilities, measure, metric) for ECE and Brier of each set present."""
        label = "temperature n/a" if self.temperature is None else f"temperature {self.temperature:.3f}"
        parts = (("raw softmax", self.raw), (label, self.calibrated))
        return [(name, measure, getattr(part, measure)) for name, part in parts if part is not None
                for measure in ("ece", "brier")]

    @property
    def bins(self) -> int | None:
        """The ECE's bin count (of the raw probabilities, else the calibrated ones)."""
        part = self.raw or self.calibrated
        return None if part is None else part.bins


@dataclass(frozen=True)
class ConformalLevel:
    """One ``alpha``: target coverage, measured coverage with its interval, mean set size (or why none)."""

    alpha: float
    target_coverage: float
    coverage: float | None
    reason: str | None
    coverage_ci_low: float | None
    coverage_ci_high: float | None
    mean_set_size: float | None


@dataclass(frozen=True)
class Conformal:
    """The conformal score, how many validation items fitted it, and each level."""

    score: str
    calibration_images: int
    levels: list[ConformalLevel]


@dataclass(frozen=True)
class Ood:
    """Items flagged out of distribution, the threshold, and the bound on false flags."""

    flagged: int
    flagged_share: float | None
    threshold: float | None
    false_flag_bound: float | None


@dataclass(frozen=True)
class TrustView:
    """The calibration, conformal and OOD parts of a trust section (each None where absent)."""

    calibration: Calibration | None
    conformal: Conformal | None
    ood: Ood | None

    @classmethod
    def of(cls, trust: Section) -> TrustView:
        """Read a trust section (``EvalResult.trust``, the trust keys of ``metrics.json``)."""
        return cls(_calibration(trust.get("calibration")), _conformal(trust.get("conformal")), _ood(trust.get("ood")))


def _calibration(section: object) -> Calibration | None:
    if not isinstance(section, Mapping) or not section:
        return None
    raw, calibrated = section.get("raw"), section.get("calibrated")
    return Calibration(
        probabilities=str(section.get("probabilities")),
        temperature=_float(section.get("temperature")),
        raw=CalibrationSet.of(raw) if isinstance(raw, Mapping) and raw else None,
        calibrated=CalibrationSet.of(calibrated) if isinstance(calibrated, Mapping) and calibrated else None,
    )


def _conformal(section: object) -> Conformal | None:
    if not isinstance(section, Mapping) or not section:
        return None
    levels = section.get("levels")
    return Conformal(
        score=str(section.get("score")),
        calibration_images=_int(section.get("calibration_images")),
        levels=[_level(level) for level in levels if isinstance(level, Mapping)] if isinstance(levels, list) else [],
    )


def _level(level: Section) -> ConformalLevel:
    reason = level.get("reason")
    return ConformalLevel(
        alpha=float(_float(level.get("alpha")) or 0.0),
        target_coverage=float(_float(level.get("target_coverage")) or 0.0),
        coverage=_float(level.get("coverage")),
        reason=None if reason is None else str(reason),
        coverage_ci_low=_float(level.get("coverage_ci_low")),
        coverage_ci_high=_float(level.get("coverage_ci_high")),
        mean_set_size=_float(level.get("mean_set_size")),
    )


def _ood(section: object) -> Ood | None:
    if not isinstance(section, Mapping) or not section:
        return None
    return Ood(
        flagged=_int(section.get("flagged")),
        flagged_share=_float(section.get("flagged_share")),
        threshold=_float(section.get("threshold")),
        false_flag_bound=_float(section.get("false_flag_bound")),
    )


def _section(part: Section, key: str) -> Section:
    value = part.get(key)
    return value if isinstance(value, Mapping) else {}


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int(value: object) -> int:
    return 0 if value is None else int(value)  # type: ignore[call-overload]

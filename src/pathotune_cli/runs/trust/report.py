"""``eval``'s trust report: calibration before and after the temperature, coverage of the sets, OOD flags.

On labelled tiles the prompt file never saw, this is where its trust section is checked:

- ``calibration``: ECE (15 equal-width bins) and Brier score, each with a percentile-bootstrap interval, of the
  raw softmax and (where the file has a temperature) of the calibrated probabilities, and both reliability
  tables (drawn into ``reliability_diagram.png``);
- ``conformal``: per stored alpha, the empirical coverage (share of tiles whose true class is in its set), with a
  Clopper-Pearson 95% interval (the sampling error a coverage of ``1 - alpha`` should fall within on exchangeable
  tiles), the mean set size and the share of empty sets;
- ``ood``: the share of these tiles flagged (on in-distribution tiles it should be about the stated false-flag
  rate) and the score's quantiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.runs.trust.apply import Trust


def trust_report(logits: np.ndarray, features: np.ndarray | None, labels: np.ndarray, trust: Trust,
                 bootstrap: int, seed: int) -> dict[str, Any]:
    """Calibration, conformal and OOD sections of ``metrics.json`` (the module docstring says what each holds)."""
    from pathotune_cli.training.calibration import calibration_metrics, softmax

    y = np.asarray(labels, np.int64)
    calibration: dict[str, Any] = {
        "probabilities": "calibrated" if trust.calibrated else "raw",
        "temperature": trust.temperature if trust.stats is not None else None,
        "raw": calibration_metrics(softmax(logits), y, bootstrap=bootstrap, seed=seed),
        "calibrated": None,
    }
    if trust.stats is not None:
        calibration["calibrated"] = calibration_metrics(softmax(logits, trust.temperature), y, bootstrap=bootstrap,
                                                        seed=seed)
    report: dict[str, Any] = {"calibration": calibration, "conformal": None, "ood": None}
    if trust.stats is None:
        report["note"] = trust.notice
        return report
    report["conformal"] = _conformal(softmax(logits, trust.temperature), y, trust)
    scores = trust.ood_scores(features) if features is not None else None
    if scores is not None and trust.ood_threshold is not None:
        flagged = scores > trust.ood_threshold
        report["ood"] = {
            "score": "mahalanobis", "threshold": trust.ood_threshold,
            "false_flag_bound": trust.stats.ood.false_flag_bound if trust.stats.ood else None,
            "flagged": int(flagged.sum()), "flagged_share": float(flagged.mean()) if len(flagged) else None,
            "score_quantiles": {f"{q:g}": float(np.quantile(scores, q)) for q in (0.05, 0.5, 0.95)}
            if len(scores) else {},
        }
    return report


def save_reliability(report: dict[str, object], path: Path, title: str) -> Path:
    """The reliability diagram of the raw and (where present) calibrated probabilities."""
    from pathotune_cli.training.trust_plots import save_reliability_diagram

    cal = report["calibration"]
    tables = {f"raw softmax (ECE {cal['raw']['ece']['value']:.3f})": cal["raw"]["reliability"]}
    if cal["calibrated"] is not None:
        label = f"temperature {cal['temperature']:.3g} (ECE {cal['calibrated']['ece']['value']:.3f})"
        tables[label] = cal["calibrated"]["reliability"]
    return save_reliability_diagram(tables, path, title=title)


def _conformal(calibrated: np.ndarray, y: np.ndarray, trust: Trust) -> dict[str, Any]:
    from pathotune_cli.training.conformal import coverage_and_size, prediction_sets

    levels = []
    for level in trust.stats.conformal.levels:
        row: dict[str, Any] = {"alpha": level.alpha, "target_coverage": 1 - level.alpha, "quantile": level.quantile}
        if level.quantile is None:
            levels.append({**row, "coverage": None, "reason": level.reason})
            continue
        sets = prediction_sets(calibrated, level.quantile)
        coverage, size = coverage_and_size(sets, y)
        covered = int(round(coverage * len(y)))
        low, high = _clopper_pearson(covered, len(y))
        levels.append({**row, "coverage": coverage, "coverage_ci_low": low, "coverage_ci_high": high,
                       "mean_set_size": size, "empty_sets": float((sets.sum(axis=1) == 0).mean())})
    return {"score": trust.stats.conformal.score, "calibration_images": trust.stats.conformal.validation_images,
            "n": int(len(y)), "levels": levels}


def _clopper_pearson(k: int, n: int, ci: float = 0.95) -> tuple[float | None, float | None]:
    """The exact binomial interval for ``k`` successes of ``n``."""
    from scipy.stats import beta

    if n == 0:
        return None, None
    tail = (1 - ci) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high

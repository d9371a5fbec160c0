"""Temperature scaling, ECE and Brier score on generated predictions with a known miscalibration."""

from __future__ import annotations

import numpy as np
import pytest

from pathotune_cli.training.calibration import (
    TEMPERATURE_BOUNDS,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_table,
    softmax,
)


def miscalibrated(n: int, classes: int = 5, sharpen: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), logits reported as sharpen * z: over-confident by a factor ``sharpen``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, classes))
    p = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return sharpen * z, labels


def test_temperature_scaling_lowers_validation_nll_on_a_miscalibrated_set() -> None:
    logits, labels = miscalibrated(2000, sharpen=4.0)
    fit = fit_temperature(logits, labels)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_before == pytest.approx(nll(logits, labels))
    assert fit.nll_after == pytest.approx(nll(logits, labels, fit.temperature))
    assert fit.temperature == pytest.approx(4.0, rel=0.15)  # recovers the sharpening it has to undo
    assert not fit.at_bound
    for t in (fit.temperature * 0.9, fit.temperature * 1.1):
        assert nll(logits, labels, t) >= fit.nll_after


def test_temperature_lowers_ece_of_over_confident_and_of_under_confident_logits() -> None:
    for sharpen, expect_above_one in ((4.0, True), (0.3, False)):
        logits, labels = miscalibrated(3000, sharpen=sharpen, seed=1)
        fit = fit_temperature(logits, labels)
        assert (fit.temperature > 1) == expect_above_one
        before = expected_calibration_error(softmax(logits), labels)
        after = expected_calibration_error(softmax(logits, fit.temperature), labels)
        assert after < before


def test_a_temperature_never_changes_the_top_class() -> None:
    logits, _ = miscalibrated(500, seed=2)
    for t in (0.05, 0.5, 2.0, 50.0):
        assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()


def test_validation_tiles_that_cannot_place_a_temperature_keep_one_and_say_why() -> None:
    labels = np.arange(30) % 3
    right = fit_temperature(np.eye(3)[labels] * 5.0, labels)
    assert right.temperature == 1.0 and "all 30 validation tiles are right" in right.note
    flat = fit_temperature(np.zeros((30, 3)) + labels[:, None], labels)
    assert flat.temperature == 1.0 and "do not vary" in flat.note


def test_a_fit_that_runs_to_its_bound_is_stored_as_no_temperature_and_says_why() -> None:
    labels = np.arange(30) % 3
    fit = fit_temperature(-5.0 * np.eye(3)[labels], labels)
    assert fit.at_bound and fit.temperature == 1.0
    assert f"T = {TEMPERATURE_BOUNDS[1]:.3g}" in fit.note and "not calibrated" in fit.note


def test_too_few_validation_slides_fit_no_temperature_and_the_note_says_slides() -> None:
    labels = np.array([0, 1, 0])
    fit = fit_temperature(np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), labels, unit="slides")
    assert fit.temperature == 1.0 and not fit.at_bound
    assert "3 validation slides are too few to fit a temperature" in fit.note


def test_ece_and_brier_match_their_formulas() -> None:
    rng = np.random.default_rng(3)
    p = softmax(rng.normal(size=(400, 4)) * 2)
    y = rng.integers(0, 4, 400)
    conf, pred = p.max(1), p.argmax(1)
    expected = 0.0
    for b in range(15):
        inside = (conf > b / 15) & (conf <= (b + 1) / 15) if b else conf <= 1 / 15
        if inside.any():
            expected += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    assert expected_calibration_error(p, y) == pytest.approx(expected)
    assert brier_score(p, y) == pytest.approx(np.mean(((p - np.eye(4)[y]) ** 2).sum(1)))
    table = reliability_table(p, y)
    assert len(table) == 15 and sum(r["count"] for r in table) == 400


def test_calibration_metrics_give_seeded_intervals_around_the_value() -> None:
    logits, labels = miscalibrated(600, seed=4)
    p = softmax(logits)
    one = calibration_metrics(p, labels, bootstrap=300, seed=7)
    again = calibration_metrics(p, labels, bootstrap=300, seed=7)
    assert one["ece"] == again["ece"] and one["brier"] == again["brier"]
    for key in ("ece", "brier"):
        assert one[key]["ci_low"] <= one[key]["value"] + 0.02 and one[key]["value"] <= one[key]["ci_high"] + 0.02
        assert one[key]["ci_low"] < one[key]["ci_high"]
    assert calibration_metrics(p, labels, bootstrap=0)["ece"]["ci_low"] is None

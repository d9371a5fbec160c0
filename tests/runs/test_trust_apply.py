"""``runs.trust``: what predict, eval and explain apply to logits, from a trust section."""

from __future__ import annotations

import numpy as np
import pytest

from pathotune_cli.engine.trust import CalibrationStats, ConformalQuantileStats, ConformalStats, TrustStats
from pathotune_cli.runs.trust.apply import Trust, extra_headers, extra_values, tile_columns
from pathotune_cli.training.calibration import softmax

CLASSES = ["a", "b", "c"]
LOGITS = np.array([[4.0, 1.0, 0.0], [1.0, 1.2, 0.9]])


def stats(temperature: float) -> TrustStats:
    calibration = CalibrationStats(temperature=temperature, validation_images=50, nll_before=1.0, nll_after=0.8,
                                   ece_before=0.2, ece_after=0.05, brier_before=0.5, brier_after=0.4)
    levels = [ConformalQuantileStats(alpha=0.1, quantile=0.8, rank=46),
              ConformalQuantileStats(alpha=0.05, quantile=None, rank=49, reason="too few")]
    return TrustStats(calibration=calibration, conformal=ConformalStats(validation_images=50, levels=levels))


def test_calibrated_probabilities_divide_the_logits_by_the_temperature_and_keep_the_top_class() -> None:
    calibrated = Trust(stats(2.0), calibrate=True)
    raw = Trust(stats(2.0), calibrate=False)
    np.testing.assert_allclose(calibrated.probabilities(LOGITS), softmax(LOGITS / 2.0))
    np.testing.assert_allclose(raw.probabilities(LOGITS), softmax(LOGITS))
    assert (calibrated.probabilities(LOGITS).argmax(1) == raw.probabilities(LOGITS).argmax(1)).all()
    assert "temperature 2" in calibrated.describe() and "--uncalibrated" in raw.describe()
    assert Trust(None, calibrate=True).describe().startswith("raw softmax")


def test_sets_use_the_calibrated_probabilities_even_when_raw_ones_are_reported() -> None:
    for calibrate in (True, False):
        trust = Trust(stats(2.0), calibrate=calibrate, alpha=0.1, quantile=0.8)
        expected = 1 - softmax(LOGITS / 2.0) <= 0.8
        np.testing.assert_array_equal(trust.sets(LOGITS), expected)


def test_tile_columns_hold_the_set_columns_only_with_alpha_and_the_ood_columns_only_with_statistics() -> None:
    plain = tile_columns(Trust(stats(1.5), calibrate=True), LOGITS, None, CLASSES)
    assert extra_headers(plain) == []
    with_sets = tile_columns(Trust(stats(1.5), calibrate=True, alpha=0.1, quantile=0.8), LOGITS, None, CLASSES)
    assert extra_headers(with_sets) == ["prediction_set", "set_size"]
    assert with_sets["prediction_set"][0] == "a" and extra_values(with_sets, 0) == ["a", 1]


@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_an_alpha_without_a_stored_quantile_is_refused_with_the_reason(alpha: float, tmp_path) -> None:
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.trust.apply import _quantile

    class File:
        path = tmp_path / "p.safetensors"

    with pytest.raises(BadInput, match="too few" if alpha == 0.05 else "not 0.3"):
        _quantile(File(), stats(1.0), alpha)

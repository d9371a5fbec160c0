"""The Mahalanobis OOD score: exact against an explicit inverse, shrinkage as scikit-learn, ranks OOD first."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

from pathotune_cli.training.ood import (
    auroc,
    fit_mahalanobis,
    flag_threshold,
    ledoit_wolf_shrinkage,
    mahalanobis_scores,
)


def gaussian_classes(per_class: int, d: int = 48, classes: int = 4, seed: int = 0):
    """Classes with their own means and one shared anisotropic covariance."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, d))
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(classes), n)
        return centres[y] + rng.normal(size=(len(y), d)) @ mix, y

    return draw, mix, rng


@pytest.mark.parametrize(("n", "d"), [(10, 50), (300, 20), (60, 60)])
def test_shrinkage_matches_scikit_learn(n: int, d: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, d)) * np.linspace(0.5, 3, d)
    x -= x.mean(0)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(sklearn_shrinkage(x, assume_centered=True), rel=1e-9)


@pytest.mark.parametrize("per_class", [3, 200])
def test_scores_equal_the_explicit_inverse_of_the_shrunk_covariance(per_class: int) -> None:
    draw, _, rng = gaussian_classes(per_class, d=24, classes=3)
    f, y = draw(per_class)
    fit = fit_mahalanobis(f, y, num_classes=4)  # class 3 has no tiles, so no mean
    assert fit.classes == (0, 1, 2)
    res = f - fit.means[y]
    s = res.T @ res / len(y)
    m = np.trace(s) / s.shape[0]
    precision = np.linalg.inv((1 - fit.shrinkage) * s + fit.shrinkage * m * np.eye(s.shape[0]))
    t = rng.normal(scale=3, size=(7, 24))
    explicit = np.sqrt(np.min([np.einsum("ni,ij,nj->n", t - mu, precision, t - mu) for mu in fit.means], axis=0))
    np.testing.assert_allclose(mahalanobis_scores(t, fit), explicit, rtol=1e-8)


def test_out_of_distribution_inputs_score_above_held_out_in_distribution_ones_few_shot() -> None:
    draw, mix, rng = gaussian_classes(8)  # 32 training tiles for 48 feature dimensions
    train, y = draw(8)
    fit = fit_mahalanobis(train, y, num_classes=4)
    held_out, _ = draw(50)
    shifted = held_out + rng.normal(scale=6.0, size=held_out.shape[1])  # another "stain": every class moved
    noise = rng.normal(scale=8.0, size=(100, held_out.shape[1]))  # nothing like any class
    inside = mahalanobis_scores(held_out, fit)
    assert auroc(inside, mahalanobis_scores(shifted, fit)) > 0.95
    assert auroc(inside, mahalanobis_scores(noise, fit)) > 0.95


def test_the_flag_threshold_keeps_false_flags_near_the_stated_rate() -> None:
    draw, _, _ = gaussian_classes(100)
    train, y = draw(100)
    fit = fit_mahalanobis(train, y, num_classes=4)
    val, _ = draw(100)
    threshold = flag_threshold(mahalanobis_scores(val, fit), rate=0.05)
    assert threshold.bound <= 0.05 and threshold.note == ""
    fresh, _ = draw(500)
    assert (mahalanobis_scores(fresh, fit) > threshold.threshold).mean() <= 0.05 + 0.03


def test_too_few_validation_tiles_take_their_largest_score_and_state_the_weaker_bound() -> None:
    threshold = flag_threshold(np.arange(10.0), rate=0.05)
    assert threshold.threshold == 9.0 and threshold.bound == pytest.approx(1 / 11)
    assert "too few" in threshold.note and "19" in threshold.note


def test_auroc_counts_ties_as_one_half() -> None:
    assert auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)

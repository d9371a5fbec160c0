"""Split conformal sets: coverage on a large exchangeable split, the finite-sample rank, too few tiles."""

from __future__ import annotations

import numpy as np
import pytest

from pathotune_cli.training.calibration import softmax
from pathotune_cli.training.conformal import (
    ALPHAS,
    conformal_quantile,
    coverage_and_size,
    join_set,
    lac_scores,
    min_samples,
    prediction_sets,
    quantile_rank,
)


def exchangeable_split(n_cal: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """One population (labels from a 'true' model), split at random; the scored model is a noisy, miscalibrated
    version of the true one, so coverage cannot come from the model being right."""
    rng = np.random.default_rng(seed)
    n, c = n_cal + n_test, 6
    z = rng.normal(scale=1.2, size=(n, c))
    labels = np.array([rng.choice(c, p=row) for row in softmax(z)])
    model = softmax(3.0 * z + rng.normal(scale=1.0, size=(n, c)))
    order = rng.permutation(n)
    cal, test = order[:n_cal], order[n_cal:]
    return model[cal], labels[cal], model[test], labels[test]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_coverage_holds_on_a_large_exchangeable_split(alpha: float) -> None:
    p_cal, y_cal, p_test, y_test = exchangeable_split(3000, 5000, seed=int(alpha * 100))
    q = conformal_quantile(lac_scores(p_cal, y_cal), alpha)
    coverage, size = coverage_and_size(prediction_sets(p_test, q.value), y_test)
    assert coverage >= 1 - alpha - 0.02
    assert coverage <= 1 - alpha + 1 / (3000 + 1) + 0.02  # and not trivially (every class in every set)
    assert 1 <= size < 6


def test_the_quantile_is_the_ceil_n_plus_one_order_statistic() -> None:
    scores = np.arange(1, 101) / 100.0  # 0.01 ... 1.00
    q = conformal_quantile(scores, 0.1)
    assert q.rank == 91 and q.value == pytest.approx(0.91)


def test_rank_is_exact_where_floating_point_would_round_up() -> None:
    assert quantile_rank(9, 0.1) == 9  # 10 * 0.9 is 9.000000000000002 in floating point
    assert quantile_rank(19, 0.05) == 19
    assert [min_samples(a) for a in ALPHAS] == [19, 9, 4]


def test_too_few_validation_tiles_store_no_quantile_and_say_why() -> None:
    q = conformal_quantile(np.linspace(0, 1, 12), 0.05)
    assert q.value is None and "12 validation tiles are too few for alpha 0.05" in q.reason and "19" in q.reason
    assert conformal_quantile(np.linspace(0, 1, 19), 0.05).value == pytest.approx(1.0)


def test_sets_hold_every_class_whose_probability_reaches_one_minus_q() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    sets = prediction_sets(p, 0.7)  # classes with p >= 0.3
    assert sets.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert [join_set(row, ["A", "B", "C"]) for row in sets] == ["A", "A|B", "C"]
    assert prediction_sets(p, 0.1).sum(1).tolist() == [0, 0, 0]  # a LAC set can be empty
    with pytest.raises(ValueError, match="alpha"):
        conformal_quantile(np.ones(5), 1.5)

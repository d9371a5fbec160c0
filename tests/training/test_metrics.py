"""Metrics agree with scikit-learn, intervals behave, and edge cases give None rather than NaN or warnings."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pathotune_cli.training import metrics as metrics_module
from pathotune_cli.training.metrics import classification_metrics, predictions_table

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa")


def make_data(
    n: int,
    c: int,
    seed: int,
    prior: list[float] | None = None,
    strength: float = 1.5,
    decimals: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels from ``prior`` and softmax scores that lean towards the true class."""
    rng = np.random.default_rng(seed)
    y = rng.choice(c, size=n, p=prior)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += strength
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    if decimals is not None:
        probs = np.round(probs, decimals)
    return y, probs


def names(c: int) -> list[str]:
    return [f"class{j}" for j in range(c)]


def score_quietly(*args: object, **kwargs: object) -> dict:
    """Call the function under test with every warning turned into an error, and check strict JSON."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_metrics(*args, **kwargs)
    json.dumps(report, allow_nan=False)
    return report


def oracle_auroc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean one-vs-rest AUROC over classes with positives and negatives, one binary sklearn call each."""
    scores = [
        roc_auc_score(y == j, probs[:, j]) for j in range(probs.shape[1]) if 0 < (y == j).sum() < len(y)
    ]
    return float(np.mean(scores)) if scores else None


CASES = {
    "balanced": dict(n=600, c=5, seed=1),
    "imbalanced": dict(n=800, c=4, seed=2, prior=[0.75, 0.15, 0.07, 0.03]),
    "tied_scores": dict(n=500, c=4, seed=3, decimals=1),
    "binary": dict(n=300, c=2, seed=4),
    "nine_classes": dict(n=900, c=9, seed=5, strength=1.0),
}


@pytest.mark.parametrize("ordinal", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_point_estimates_match_sklearn(case: str, ordinal: bool) -> None:
    params = CASES[case]
    y, probs = make_data(**params)
    c = params["c"]
    pred = probs.argmax(axis=1)
    report = score_quietly(y, probs, names(c), ordinal=ordinal, bootstrap=0)
    got = {key: report["metrics"][key]["value"] for key in METRICS}

    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    weights = "quadratic" if ordinal else None
    assert got["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, pred, labels=range(c), weights=weights))
    assert got["macro_auroc"] == pytest.approx(oracle_auroc(y, probs))
    if c == 2:
        assert got["macro_auroc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    elif params.get("decimals") is None:  # rows sum to 1, as sklearn's multiclass OvR demands
        ovr = roc_auc_score(y, probs, multi_class="ovr", average="macro")
        assert got["macro_auroc"] == pytest.approx(ovr)
    assert report["kappa_weights"] == ("quadratic" if ordinal else "none")
    assert report["confusion_matrix"] == confusion_matrix(y, pred, labels=range(c)).tolist()


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_class_scores_match_sklearn(case: str) -> None:
    params = CASES[case]
    y, probs = make_data(**params)
    c = params["c"]
    pred = probs.argmax(axis=1)
    per_class = score_quietly(y, probs, names(c), bootstrap=0)["per_class"]
    labels = list(range(c))
    expected = {
        "precision": precision_score(y, pred, labels=labels, average=None, zero_division=0),
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0),
        "f1": f1_score(y, pred, labels=labels, average=None, zero_division=0),
    }
    for j, name in enumerate(names(c)):
        assert per_class[name]["support"] == int((y == j).sum())
        for metric, values in expected.items():
            assert per_class[name][metric]["value"] == pytest.approx(values[j]), (name, metric)


def test_missing_and_never_predicted_classes() -> None:
    """Class 3 never occurs in y_true; class 4 occurs but is never predicted."""
    y, probs = make_data(n=400, c=5, seed=7, prior=[0.3, 0.3, 0.3, 0.0, 0.1])
    probs[:, 4] = 0.0
    probs[:25, 3] = 2.0  # a few predictions of the absent class, so it counts for macro F1
    pred = probs.argmax(axis=1)
    assert 3 not in y and 3 in pred and 4 in y and 4 not in pred

    report = score_quietly(y, probs, names(5), bootstrap=200)
    got = {key: report["metrics"][key]["value"] for key in METRICS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the very cases being tested
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        present = sorted(set(y) | set(pred))
        assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=present))
        assert got["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, pred, labels=range(5)))
    assert got["macro_auroc"] == pytest.approx(oracle_auroc(y, probs))

    absent, unpredicted = report["per_class"]["class3"], report["per_class"]["class4"]
    assert absent["support"] == 0
    assert absent["recall"] == {"value": None, "ci_low": None, "ci_high": None}
    assert absent["precision"]["value"] == 0.0 and absent["f1"]["value"] == 0.0
    assert unpredicted["precision"]["value"] == 0.0  # zero_division=0, as in sklearn
    assert unpredicted["recall"]["value"] == 0.0 and unpredicted["f1"]["value"] == 0.0


def test_single_sample_gives_none_for_undefined_and_collapsed_intervals() -> None:
    report = score_quietly(np.array([1]), np.array([[0.2, 0.7, 0.1]]), names(3), bootstrap=50)
    m = report["metrics"]
    assert report["n"] == 1
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert m[key] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert m["macro_auroc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert m["cohen_kappa"] == {"value": None, "ci_low": None, "ci_high": None}
    assert report["per_class"]["class0"]["recall"]["value"] is None
    assert report["per_class"]["class0"]["f1"]["value"] is None


def test_perfect_predictions_score_one_everywhere() -> None:
    y = np.repeat(np.arange(4), 25)
    probs = np.eye(4)[y] * 0.9 + 0.025
    report = score_quietly(y, probs, names(4), ordinal=True, bootstrap=200)
    for key in METRICS:
        assert report["metrics"][key] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}, key


def test_one_class_present_leaves_auroc_undefined() -> None:
    y = np.zeros(20, dtype=int)
    probs = np.tile([0.6, 0.3, 0.1], (20, 1))
    m = score_quietly(y, probs, names(3), bootstrap=100)["metrics"]
    assert m["accuracy"]["value"] == 1.0
    assert m["macro_auroc"]["value"] is None and m["macro_auroc"]["ci_low"] is None
    assert m["cohen_kappa"]["value"] is None


def test_intervals_contain_the_estimate_and_are_ordered() -> None:
    y, probs = make_data(n=500, c=5, seed=11, prior=[0.4, 0.3, 0.15, 0.1, 0.05])
    report = score_quietly(y, probs, names(5), ordinal=True, bootstrap=500, seed=3)
    for key in METRICS:
        cell = report["metrics"][key]
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"], (key, cell)
    assert report["bootstrap"] == {"resamples": 500, "seed": 3, "ci": 0.95}


def test_intervals_narrow_as_n_grows() -> None:
    def widths(n: int) -> dict[str, float]:
        y, probs = make_data(n=n, c=4, seed=12)
        m = score_quietly(y, probs, names(4), bootstrap=300)["metrics"]
        return {key: m[key]["ci_high"] - m[key]["ci_low"] for key in METRICS}

    small, large = widths(150), widths(3000)
    for key in METRICS:
        assert large[key] < 0.6 * small[key], (key, small[key], large[key])


def test_same_seed_gives_identical_intervals_and_other_seeds_differ() -> None:
    y, probs = make_data(n=300, c=3, seed=13)
    first = score_quietly(y, probs, names(3), bootstrap=200, seed=42)
    assert score_quietly(y, probs, names(3), bootstrap=200, seed=42) == first
    assert score_quietly(y, probs, names(3), bootstrap=200, seed=43)["metrics"] != first["metrics"]


def test_narrower_coverage_gives_narrower_interval() -> None:
    y, probs = make_data(n=300, c=3, seed=14)
    wide = score_quietly(y, probs, names(3), bootstrap=300, ci=0.95)["metrics"]["accuracy"]
    narrow = score_quietly(y, probs, names(3), bootstrap=300, ci=0.5)["metrics"]["accuracy"]
    assert wide["ci_low"] < narrow["ci_low"] <= narrow["ci_high"] < wide["ci_high"]


def test_bootstrap_matches_a_naive_loop_over_sklearn() -> None:
    """The weighted-count shortcut gives the same resampled metrics as scoring each resample outright."""
    n, resamples, seed = 60, 40, 9
    y, probs = make_data(n=n, c=4, seed=15, prior=[0.5, 0.3, 0.15, 0.05], decimals=1)
    report = score_quietly(y, probs, names(4), ordinal=True, bootstrap=resamples, seed=seed)

    draws: dict[str, list[float]] = {key: [] for key in METRICS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for idx in np.random.default_rng(seed).integers(0, n, size=(resamples, n)):
            yt, pt = y[idx], probs[idx]
            pred = pt.argmax(axis=1)
            draws["accuracy"].append(accuracy_score(yt, pred))
            draws["balanced_accuracy"].append(balanced_accuracy_score(yt, pred))
            draws["macro_f1"].append(f1_score(yt, pred, average="macro"))
            draws["cohen_kappa"].append(cohen_kappa_score(yt, pred, labels=range(4), weights="quadratic"))
            auroc = oracle_auroc(yt, pt)
            draws["macro_auroc"].append(np.nan if auroc is None else auroc)
    for key in METRICS:
        values = np.asarray(draws[key], dtype=float)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5])
        assert report["metrics"][key]["ci_low"] == pytest.approx(low), key
        assert report["metrics"][key]["ci_high"] == pytest.approx(high), key


def test_memory_blocks_do_not_change_the_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    y, probs = make_data(n=100, c=3, seed=16)
    whole = score_quietly(y, probs, names(3), bootstrap=50)
    monkeypatch.setattr(metrics_module, "_BLOCK_CELLS", 700)  # 7 resamples per block
    assert score_quietly(y, probs, names(3), bootstrap=50) == whole


def test_bootstrap_zero_reports_values_without_intervals() -> None:
    y, probs = make_data(n=50, c=3, seed=17)
    report = score_quietly(y, probs, names(3), bootstrap=0)
    assert report["metrics"]["accuracy"]["value"] is not None
    assert report["metrics"]["accuracy"]["ci_low"] is None
    assert report["bootstrap"]["resamples"] == 0


@pytest.mark.parametrize(
    ("y", "probs", "match"),
    [
        (np.array([0, 1]), np.full((2, 2), 0.5), r"probs must have shape \(N, 3\)"),
        (np.array([0, 1, 2]), np.full((2, 3), 0.3), r"y_true must have shape \(2,\)"),
        (np.array([], dtype=int), np.zeros((0, 3)), "y_true is empty"),
        (np.array([0.5, 1.0]), np.full((2, 3), 0.3), "integer class indices"),
        (np.array([0, 3]), np.full((2, 3), 0.3), "outside"),
        (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), "NaN or inf"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(y: np.ndarray, probs: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, probs, names(3))


def test_bad_bootstrap_settings_are_refused() -> None:
    y, probs = make_data(n=10, c=3, seed=19)
    with pytest.raises(ValueError, match="ci must be in"):
        classification_metrics(y, probs, names(3), ci=95)
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        classification_metrics(y, probs, names(3), bootstrap=-1)
    with pytest.raises(ValueError, match="unique"):
        classification_metrics(y, probs, ["a", "a", "b"])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    c=st.integers(min_value=2, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
    ordinal=st.booleans(),
)
def test_any_input_gives_bounded_values_and_ordered_intervals(
    n: int, c: int, seed: int, ordinal: bool
) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    probs = np.round(rng.random((n, c)), 1)  # coarse scores, so ties and argmax ties happen
    report = score_quietly(y, probs, names(c), ordinal=ordinal, bootstrap=30, seed=seed)
    assert 0.0 <= report["metrics"]["accuracy"]["value"] <= 1.0
    for key in METRICS:
        cell = report["metrics"][key]
        low = -1.0 if key == "cohen_kappa" else 0.0
        for bound in (cell["value"], cell["ci_low"], cell["ci_high"]):
            assert bound is None or low - 1e-12 <= bound <= 1.0 + 1e-12, (key, cell)
        if cell["ci_low"] is not None:
            assert cell["ci_low"] <= cell["ci_high"]
    assert sum(map(sum, report["confusion_matrix"])) == n


def test_predictions_table_names_classes_and_marks_mistakes() -> None:
    y = np.array([0, 2, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    rows = predictions_table(y, probs, ["tumor", "stroma", "necrosis"], ["a.png", Path("b.png"), "c.png"])
    assert rows[0] == {
        "path": "a.png",
        "label": "tumor",
        "predicted": "tumor",
        "correct": True,
        "prob_tumor": 0.7,
        "prob_stroma": 0.2,
        "prob_necrosis": 0.1,
    }
    assert rows[1]["path"] == "b.png" and rows[1]["correct"] is True
    assert rows[2]["label"] == "stroma" and rows[2]["predicted"] == "tumor" and rows[2]["correct"] is False
    json.dumps(rows, allow_nan=False)


def test_predictions_table_refuses_mismatched_paths() -> None:
    with pytest.raises(ValueError, match="got 1 paths for 2 labels"):
        predictions_table(np.array([0, 1]), np.eye(2), ["a", "b"], ["x.png"])

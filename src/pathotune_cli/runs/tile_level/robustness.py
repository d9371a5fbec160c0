"""``pathotune eval --robustness``: the metrics again under controlled shifts, and per site when the data says.

Each shift of ``training.shifts`` (stain, JPEG quality, blur, resolution; mildest first) is applied to every
evaluation tile, the model runs again, and the report gives accuracy, balanced accuracy and macro F1 with their
bootstrap intervals, the drop from the unshifted accuracy, whether the shifted accuracy is still inside the
unshifted interval, and the share of tiles whose prediction changed. When the data is a CSV with a ``site`` (or
``centre``/``center``) column, the unshifted metrics are also given per site, with the spread between sites.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.events import Reporter, ignore, note

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.hardware import Placement
    from pathotune_cli.training.images import TileStore
    from pathotune_cli.training.shifts import Shift

MEANING = (
    "A drop means the model's answers depend on that property of the image (stain, compression, focus or "
    "resolution): if the slides it will see vary that much from the evaluation tiles, expect about that loss. A "
    "shifted accuracy inside the unshifted 95% interval is within the noise of this data set, not a proven "
    "robustness; a spread between sites says the same about the labs or scanners the data came from."
)
SITE_COLUMNS = ("site", "centre", "center")


class ShiftedStore:
    """An ``ImageStore`` whose tiles come out shifted (seeded per tile)."""

    def __init__(self, store: TileStore, shift: Shift, seed: int) -> None:
        self.store, self.shift, self.seed = store, shift, seed

    def __len__(self) -> int:
        return len(self.store)

    def batch(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, S, S) tiles at ``index``, shifted."""
        from pathotune_cli.training.shifts import apply_shift

        return apply_shift(self.shift, self.store.batch(index), np.asarray(index), self.seed)


def robustness_report(
    model: PromptedModel, store: TileStore, labels: np.ndarray, class_names: list[str],
    probabilities: Callable[[np.ndarray], np.ndarray], unshifted: dict[str, Any], unshifted_probs: np.ndarray,
    placement: Placement, batch_size: int, bootstrap: int, seed: int,
    sites: list[str] | None = None, report: Reporter = ignore,
) -> dict[str, Any]:
    """The robustness table (the ``robustness`` key of ``metrics.json``).

    Args:
        model: The prompted model, placed.
        store: The evaluation tiles (``ImageStore``).
        labels: Their true class indices.
        class_names: The task's classes.
        probabilities: Logits to the probabilities ``eval`` scores (calibrated unless ``--uncalibrated``).
        unshifted: ``eval``'s own scores (``classification_metrics``) on the same tiles.
        unshifted_probs: ``eval``'s own probabilities (N, C) on them.
        placement: Device and precision.
        batch_size: Tiles per forward.
        bootstrap: Bootstrap resamples for each interval.
        seed: Seeds the stain shifts and the bootstrap.
        sites: Each tile's site, or None when the data has no site column.
        report: Progress lines.
    """
    from pathotune_cli.training.metrics import classification_metrics
    from pathotune_cli.training.outputs import model_outputs
    from pathotune_cli.training.shifts import FAMILIES, all_shifts

    base_probs = np.asarray(unshifted_probs)
    rows = []
    for shift in all_shifts():
        note(report, f"robustness: {shift.name}")
        outputs = model_outputs(model, ShiftedStore(store, shift, seed), batch_size, placement, with_features=False)
        probs = np.asarray(probabilities(outputs.logits))
        scores = classification_metrics(labels, probs, class_names, bootstrap=bootstrap, seed=seed)
        rows.append(_row(shift, scores, unshifted, float(np.mean(probs.argmax(1) != base_probs.argmax(1)))))
    return {
        "unshifted": _metric_triplets(unshifted),
        "shifts": rows,
        "families": {name: unit for name, (unit, _) in FAMILIES.items()},
        "sites": _per_site(labels, base_probs, class_names, sites, bootstrap, seed) if sites else None,
        "meaning": MEANING,
    }


def sites_of(data: Path, paths: list[Path]) -> list[str] | None:
    """Each tile's site from the data CSV's ``site``/``centre``/``center`` column; None for a folder or no column."""
    data = Path(data)
    if not data.is_file():
        return None
    with data.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    column = next((c for c in SITE_COLUMNS if rows and c in rows[0]), None)
    if column is None:
        return None
    by_path = {}
    for row in rows:
        file = Path((row.get("path") or "").strip()).expanduser()
        by_path[(file if file.is_absolute() else data.parent / file).resolve()] = (row.get(column) or "").strip()
    return [by_path.get(Path(p).resolve(), "") or "unknown" for p in paths]


def save_robustness_plot(doc: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy (with its 95% interval) against each family's strength, over the unshifted interval's band."""
    from pathotune_cli.training.plots import _new_figure, _save_atomically

    families = list(doc["families"])
    fig = _new_figure((3.2 * len(families), 3.2))
    axes = fig.subplots(1, len(families), sharey=True, squeeze=False)[0]
    base = doc["unshifted"]["accuracy"]
    for ax, family in zip(axes, families, strict=True):
        rows = [r for r in doc["shifts"] if r["family"] == family]
        x = [r["strength"] for r in rows]
        y = np.array([r["accuracy"]["value"] for r in rows], dtype=float)
        low = np.array([r["accuracy"]["ci_low"] if r["accuracy"]["ci_low"] is not None else np.nan for r in rows])
        high = np.array([r["accuracy"]["ci_high"] if r["accuracy"]["ci_high"] is not None else np.nan for r in rows])
        if base["ci_low"] is not None:
            ax.axhspan(base["ci_low"], base["ci_high"], color="0.85", label="unshifted 95% CI")
        ax.axhline(base["value"], color="0.4", lw=1, label="unshifted")
        ax.errorbar(x, y, yerr=[np.nan_to_num(y - low), np.nan_to_num(high - y)], marker="o", capsize=3)
        ax.set_title(family)
        ax.set_xlabel(doc["families"][family], fontsize=7)
        if family in ("jpeg", "resolution"):
            ax.invert_xaxis()  # stronger to the right in every panel
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    return _save_atomically(fig, path)


def _row(shift: Shift, scores: dict[str, Any], unshifted: dict[str, Any], changed: float) -> dict[str, Any]:
    base = unshifted["metrics"]["accuracy"]
    accuracy = scores["metrics"]["accuracy"]["value"]
    inside = base["ci_low"] is not None and base["ci_low"] <= accuracy <= base["ci_high"]
    return {"shift": shift.name, "family": shift.family, "strength": shift.strength, "rank": shift.rank,
            **_metric_triplets(scores), "accuracy_drop": round(base["value"] - accuracy, 6),
            "within_unshifted_ci": bool(inside), "changed_predictions": round(changed, 6)}


def _metric_triplets(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: scores["metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in scores["metrics"]}


def _per_site(labels: np.ndarray, probs: np.ndarray, class_names: list[str], sites: list[str], bootstrap: int,
              seed: int) -> dict[str, Any]:
    from pathotune_cli.training.metrics import classification_metrics

    site_array = np.asarray(sites)
    per = {}
    for site in sorted(set(sites)):
        mask = site_array == site
        scores = classification_metrics(labels[mask], probs[mask], class_names, bootstrap=bootstrap, seed=seed)
        per[site] = {"n": int(mask.sum()), **_metric_triplets(scores)}
    values = [v["accuracy"]["value"] for v in per.values() if v["accuracy"]["value"] is not None]
    spread = float(max(values) - min(values)) if values else None
    worst = min(per, key=lambda s: per[s]["accuracy"]["value"] if per[s]["accuracy"]["value"] is not None else 2)
    return {"per_site": per, "accuracy_spread": spread, "worst_site": worst}

"""The finished cells as rows: every metric with its interval, and the paired difference to linear probing.

The difference to linear probing pairs each run with the linear probe of the same backbone, shots and seed, on
the same test tiles: ``training.metrics.paired_difference`` resamples the tile indices once per bootstrap draw
and applies them to both runs' predictions. Per group (backbone, method variant, shots) the difference is the
mean over the seeds both have, with every seed's pair under the same draws.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy.cells import METRICS, PREDICTIONS, read_record
from benchmarks.accuracy.grid import Cell, GridSpec
from pathotune_cli.errors import PathotuneError

SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa")
DIFFERENCED = ("balanced_accuracy", "macro_f1", "macro_auroc")
BASELINE = "linear"


@dataclass
class Result:
    """A finished cell: its record, its metrics and (read when needed) its test predictions."""

    cell: Cell
    folder: Path
    record: dict[str, Any]
    metrics: dict[str, Any]
    _predictions: tuple[list[str], np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def group(self) -> tuple[str, str, str]:
        """(backbone, variant, shots): the runs a mean ± sd is taken over."""
        return self.cell.backbone_name, self.cell.variant, self.cell.shots_label

    @property
    def partner(self) -> tuple[str, str, str, int]:
        """The linear probe this run is paired with."""
        return self.cell.backbone_name, BASELINE, self.cell.shots_label, self.cell.seed

    def score(self, name: str) -> dict[str, float | None]:
        """``{"value", "ci_low", "ci_high"}`` of one metric."""
        return self.metrics["metrics"][name]

    def predictions(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(tile paths, true class indices, class scores) from ``eval/predictions.csv``."""
        if self._predictions is None:
            classes = self.metrics["classes"]
            with (self.folder / PREDICTIONS).open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            paths = [row["path"] for row in rows]
            y = np.array([classes.index(row["label"]) for row in rows], dtype=np.int64)
            probs = np.array([[float(row[f"prob_{c}"]) for c in classes] for row in rows], dtype=np.float64)
            self._predictions = (paths, y, probs)
        return self._predictions


def load_results(out: Path, cells: list[Cell]) -> list[Result]:
    """The finished cells among ``cells`` (those with a record and metrics), in grid order."""
    results = []
    for cell in cells:
        folder = cell.folder(out)
        record = read_record(folder)
        if record is None or not (folder / METRICS).is_file():
            continue
        results.append(Result(cell, folder, record, json.loads((folder / METRICS).read_text())))
    return results


def differences(spec: GridSpec, results: list[Result]) -> tuple[dict[int, dict], dict[tuple, dict]]:
    """Paired differences to the linear probe: per run (by ``id(result)``) and per group over seeds."""
    from pathotune_cli.training.metrics import paired_difference

    linear = {r.partner: r for r in results if r.cell.method == BASELINE}
    per_run: dict[int, dict] = {}
    groups: dict[tuple, list[tuple[Result, Result]]] = defaultdict(list)
    for result in results:
        base = linear.get(result.partner)
        if result.cell.method == BASELINE or base is None:
            continue
        groups[result.group].append((base, result))
        y = _same_tiles(base, result)
        per_run[id(result)] = paired_difference(
            y, [base.predictions()[2]], [result.predictions()[2]], DIFFERENCED, spec.bootstrap, seed=0
        )
    per_group = {}
    for group, pairs in groups.items():
        y = _same_tiles(*pairs[0])
        per_group[group] = paired_difference(
            y, [a.predictions()[2] for a, _ in pairs], [b.predictions()[2] for _, b in pairs], DIFFERENCED,
            spec.bootstrap, seed=0,
        )
    return per_run, per_group


def rows(results: list[Result], per_run: dict[int, dict]) -> list[dict[str, Any]]:
    """One row per run for ``accuracy.csv``."""
    table = []
    for result in results:
        cell, record = result.cell, result.record
        row: dict[str, Any] = {
            "backbone": cell.backbone_name, "method": cell.method, "ablation": cell.ablation,
            "tvp_tokens": record.get("tvp_tokens"), "shots": cell.shots_label, "seed": cell.seed,
        }
        for name in SCORES:
            score = result.score(name)
            row.update({name: score["value"], f"{name}_ci_low": score["ci_low"], f"{name}_ci_high": score["ci_high"]})
        diff = per_run.get(id(result))
        for name in DIFFERENCED:
            d = diff[name] if diff else {"value": None, "ci_low": None, "ci_high": None}
            row.update({f"delta_{name}_vs_linear": d["value"], f"delta_{name}_ci_low": d["ci_low"],
                        f"delta_{name}_ci_high": d["ci_high"]})
        tune = record["tune"]
        row.update({
            "trainable_parameters": tune["trainable_parameters"], "backbone_parameters": tune["backbone_parameters"],
            "tuning_seconds": tune["seconds"], "eval_seconds": record["eval"]["seconds"],
            "epochs_run": tune["epochs_run"], "train_images": tune["train_images"], "val_images": tune["val_images"],
            "test_tiles": record["eval"]["tiles"], "random_weights": tune["random_weights"],
            "precision": tune["precision"], "device": tune["device"], "run": str(result.folder),
        })
        table.append(row)
    return table


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    """``accuracy.csv``, one row per run (empty cells for undefined values)."""
    from pathotune_cli.files import write_csv as write

    header = list(table[0]) if table else ["backbone", "method", "ablation", "tvp_tokens", "shots", "seed"]
    write(path, header, ([("" if row[k] is None else row[k]) for k in header] for row in table))


def _same_tiles(a: Result, b: Result) -> np.ndarray:
    """The true labels both runs were scored on, after checking they are the same tiles in the same order."""
    paths_a, y_a, _ = a.predictions()
    paths_b, y_b, _ = b.predictions()
    if paths_a != paths_b or not np.array_equal(y_a, y_b):
        raise PathotuneError(f"{a.folder} and {b.folder} were not evaluated on the same test tiles",
                             "rerun the grid: a cell whose test data changed is redone")
    return y_a

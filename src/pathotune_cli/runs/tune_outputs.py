"""The tables and pictures a tuning run writes beside its prompt file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.files import sha256_file, write_csv, write_json

if TYPE_CHECKING:
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.events import Reporter
    from pathotune_cli.hardware import Placement
    from pathotune_cli.runs.trust.fit import FittedTrust
    from pathotune_cli.training.data import LabelledSet
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.loop import FitResult, Split

HISTORY_COLUMNS = (
    "epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "lr", "best"
)


def write_history(path: Path, history: list[dict[str, object]]) -> None:
    """Per-epoch history as CSV."""
    write_csv(path, HISTORY_COLUMNS, ([row.get(c, "") for c in HISTORY_COLUMNS] for row in history))


def data_manifest(path: Path, train_set: LabelledSet | None, val_set: LabelledSet | None) -> None:
    """Every file the run read: split, label, size and sha256, so the run can be redone and audited.

    Tiles read from slides (``labels.csv``) are listed by slide and position instead, with the group (slide or
    patient) that decided their split.
    """
    if train_set is not None and train_set.rows is not None:
        from pathotune_cli.runs.tile_level.labels import write_data_manifest

        return write_data_manifest(path, train_set, val_set)
    rows = []
    for split, data in (("train", train_set), ("val", val_set)):
        if data is None:
            continue
        for file, label in zip(data.paths, data.labels, strict=True):
            rows.append((str(file), data.class_names[int(label)], split, file.stat().st_size, sha256_file(file)))
    write_csv(path, ("path", "label", "split", "bytes", "sha256"), rows)


def validation_trust(
    model: PromptedModel, splits: tuple[Split, Split | None], batch_size: int, placement: Placement, seed: int,
    result: FitResult, class_names: list[str], report: Reporter,
) -> tuple[np.ndarray | None, FittedTrust | None]:
    """The validation tiles' raw probabilities and the trust section fitted on them (None, None without).

    One pass over the validation tiles gives their logits and features; one over the training tiles (at most
    ``trust_fit.OOD_FIT_MAX``) their features for the OOD means. Both un-augmented, with the best epoch loaded.
    """
    import torch

    from pathotune_cli.runs.trust.fit import fit_trust, subset_for_ood
    from pathotune_cli.training.calibration import softmax
    from pathotune_cli.training.outputs import model_outputs

    train, val = splits
    if val is None:
        return None, None
    cache = result.instance_cache
    val_out = model_outputs(model, val.store, batch_size, placement, cache.get("val"))
    idx = subset_for_ood(len(train.labels), seed)
    train_cache = cache["train"][torch.as_tensor(idx)] if "train" in cache else None
    train_out = model_outputs(model, _Subset(train.store, idx), batch_size, placement, train_cache)
    fitted = fit_trust(val_out.logits, val.labels, val_out.features, train_out.features, train.labels[idx],
                       class_names, report)
    return softmax(val_out.logits).astype(np.float32), fitted


def write_validation_report(
    path_for: Callable[[str], Path], model: PromptedModel, val_split: Split | None, val_set: LabelledSet | None,
    task: TaskPreset, batch_size: int, placement: Placement, seed: int, result: FitResult,
    probs: np.ndarray | None = None, trust: dict[str, object] | None = None,
) -> dict[str, Any]:
    """Metrics with confidence intervals, predictions, confusion matrix and curves for the best epoch.

    ``path_for(name)`` is where the file ``name`` goes (``tune`` passes temporaries it renames together).
    ``probs`` are the validation tiles' raw probabilities where already computed; ``trust`` the fitted trust
    section's summary, written into ``metrics.json`` under ``trust``.
    """
    from pathotune_cli.training.loop import predict_probs
    from pathotune_cli.training.metrics import classification_metrics, predictions_table
    from pathotune_cli.training.plots import save_confusion_matrix, save_history_curves

    if result.history:
        save_history_curves(result.history, path_for("curves.png"))
    if val_split is None:
        return {}
    if probs is None:
        probs = predict_probs(model, val_split.store, batch_size, placement, result.instance_cache.get("val"))
    metrics = classification_metrics(val_split.labels, probs, task.class_names, ordinal=task.ordinal, seed=seed)
    if trust is not None:
        metrics["trust"] = trust
    write_json(path_for("metrics.json"), metrics)
    rows = predictions_table(val_split.labels, probs, task.class_names, [str(p) for p in val_set.paths])
    if rows:
        write_csv(path_for("val_predictions.csv"), list(rows[0]), (list(r.values()) for r in rows))
    save_confusion_matrix(
        metrics["confusion_matrix"], task.class_names, path_for("confusion_matrix.png"), title="validation"
    )
    summary = {k: v["value"] for k, v in metrics["metrics"].items()}
    return {"summary": summary, "full": metrics}


class _Subset:
    """The ``ImageStore`` interface over some of another store's tiles."""

    def __init__(self, store: ImageStore, index: np.ndarray) -> None:
        self.store = store
        self.index = np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, index: np.ndarray | list[int]) -> Any:
        """uint8 tiles at ``index`` of the subset."""
        return self.store.batch(self.index[np.asarray(index)])

"""Methods fitted without a gradient step: one pass over the training tiles (prototypes, knn), or none (zeroshot).

The training tiles are encoded once, un-augmented, in eval mode and without gradients; the head's ``fit`` fills
its buffers from those features. There is no optimiser. The result looks like one epoch of ``training.loop.fit``
(its training loss is the fitted head's on the training tiles), so the run folder, the validation report and the
trust section are written as for any method.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from pathotune_cli.config.run import KernelSpec, TrainSettings
from pathotune_cli.events import EpochDone, Reporter, TrainingStarted, ignore, note
from pathotune_cli.hardware import Placement
from pathotune_cli.training.distributed import SINGLE, Dist, sharded
from pathotune_cli.training.images import ImageStore, to_float
from pathotune_cli.training.loop import FitResult, Split, predict_probs, val_row


def encode_tiles(model: torch.nn.Module, store: ImageStore, batch_size: int, placement: Placement,
                 dist: Dist = SINGLE) -> torch.Tensor:
    """``model.features`` of every tile (N, d), float32 on the CPU, un-augmented; each rank encodes its slice."""
    model.eval()

    def encode(lo: int, hi: int) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(lo, hi, batch_size):
                images = to_float(store.batch(np.arange(start, min(start + batch_size, hi)))).to(placement.device)
                with placement.autocast():
                    out.append(model.features(images).float().cpu())
        return torch.cat(out) if out else torch.empty(0, model.feature_dim)

    return sharded(dist, len(store), encode)


def fit_without_gradients(
    model: torch.nn.Module, train: Split | None, val: Split | None, settings: TrainSettings, placement: Placement,
    kernels: KernelSpec | None = None, report: Reporter = ignore, dist: Dist = SINGLE,
) -> FitResult:
    """Fit a ``prototypes``, ``knn`` or ``zeroshot`` model's head (``engine.heads``) in one pass, no optimiser.

    Args:
        model: A ``PromptedModel`` whose head is a ``FittedHead``.
        train: The training tiles (None for ``zeroshot`` without data: nothing to fit).
        val: Validation tiles, scored once.
        settings: Only the batch size is read.
        placement: Device and precision.
        kernels: The frozen backbone's kernel pin.
        report: Receives a note and the one "epoch" row.
        dist: The ranks under ``torchrun``; each encodes its slice, every rank fits the same head.
    """
    started = time.perf_counter()
    model.place(placement, "inference", kernels)
    model.requires_grad_(False)
    report(TrainingStarted(1, 0, 1))
    row: dict[str, float | int | bool] = {"epoch": 1, "lr": 0.0, "train_loss": float("nan"), "best": True}
    if train is not None and len(train.labels):
        note(report, f"{model.method}: encoding {len(train.labels)} training tiles once, no gradient steps")
        features = encode_tiles(model, train.store, settings.batch_size, placement, dist)
        labels = torch.as_tensor(train.labels)
        model.head.to("cpu").fit(features, labels)
        with torch.no_grad():
            row["train_loss"] = float(F.cross_entropy(model.head(features).float(), labels))
        model.head.to(placement.device)
        stored = sum(b.numel() * b.element_size() for b in model.head.buffers())
        note(report, f"{model.method}: the prompt file stores {stored / 1024:.0f} KiB of fitted state"
                     + (f" ({len(labels)} training features)" if model.method == "knn" else ""))
    if val is not None:
        row.update(val_row(predict_probs(model, val.store, settings.batch_size, placement, None, dist), val.labels,
                           None))
    report(EpochDone(row))
    model.eval()
    return FitResult([row], 1, None, False, None, time.perf_counter() - started, {}, model.kernel_choices())

"""The training loop: seeded per epoch, checkpointed per epoch, early-stopped on validation.

Every random draw of epoch ``e`` comes from generators seeded with ``(seed, e)``, and the learning rate is a
function of the step, so a run killed after any epoch and resumed ends with the same weights as one that
never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pathotune_cli.config.run import TrainSettings
from pathotune_cli.errors import BadInput
from pathotune_cli.hardware import Placement
from pathotune_cli.training.augment import augment
from pathotune_cli.training.checkpoint import load_checkpoint, save_checkpoint
from pathotune_cli.training.images import ImageStore, to_float
from pathotune_cli.training.schedule import lr_at

HIGHER_IS_BETTER = {"balanced_accuracy": True, "accuracy": True, "macro_f1": True, "loss": False}


@dataclass
class Split:
    """Decoded tiles and their labels."""

    store: ImageStore
    labels: np.ndarray


@dataclass
class FitResult:
    """What a finished (or resumed and finished) fit leaves behind."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float | None
    stopped_early: bool
    resumed_from: int | None
    seconds: float
    instance_cache: dict[str, torch.Tensor] = field(default_factory=dict)


Reporter = Callable[[str, dict[str, Any]], None]
"""Called with ("start", {...}), ("step", {...}) and ("epoch", row); the CLI draws progress from it."""


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (N / (C_present * n_c)); classes without images get weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def encode_instances(model, store: ImageStore, batch_size: int, placement: Placement) -> torch.Tensor:  # noqa: ANN001
    """Instance features of every tile, once (on the un-augmented tile)."""
    feats = []
    for start in range(0, len(store), batch_size):
        images = to_float(store.batch(np.arange(start, min(start + batch_size, len(store))))).to(placement.device)
        with placement.autocast():
            feats.append(model.instance_features(images).float().cpu())
    return torch.cat(feats) if feats else torch.empty(0)


def predict_probs(
    model, store: ImageStore, batch_size: int, placement: Placement, instance: torch.Tensor | None = None  # noqa: ANN001
) -> np.ndarray:
    """Class probabilities (N, C) for every tile in ``store``, in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(store), batch_size):
            idx = np.arange(start, min(start + batch_size, len(store)))
            images = to_float(store.batch(idx)).to(placement.device)
            feats = instance[idx].to(placement.device) if instance is not None else None
            with placement.autocast():
                logits = model(images, feats)
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


def fit(
    model,  # noqa: ANN001 - a PromptedModel
    train: Split,
    val: Split | None,
    settings: TrainSettings,
    placement: Placement,
    seed: int,
    checkpoint: Path | None = None,
    resume: bool = False,
    config_digest: str = "",
    report: Reporter | None = None,
) -> FitResult:
    """Train the model's trainable tensors; leaves the best epoch's tensors loaded."""
    report = report or (lambda kind, info: None)
    started = time.perf_counter()
    model.to(placement.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, settings)
    num_classes = model.head.out_features
    weights = class_weights(train.labels, num_classes).to(placement.device) if settings.class_weights else None
    steps_per_epoch = max(1, -(-len(train.labels) // settings.batch_size))
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(round(settings.warmup_epochs * steps_per_epoch))
    higher = HIGHER_IS_BETTER[settings.monitor]

    cache: dict[str, torch.Tensor] = {}
    if model.needs_instance_features and model.settings.ivp.cache:
        report("info", {
            "message": (
                "encoding instance features once for "
                f"{len(train.labels) + (len(val.labels) if val else 0)} tiles"
            ),
        })
        cache["train"] = encode_instances(model, train.store, settings.batch_size, placement)
        if val is not None:
            cache["val"] = encode_instances(model, val.store, settings.batch_size, placement)

    history: list[dict[str, Any]] = []
    best_state = {k: v.clone() for k, v in model.trained_state().items()}
    best_value: float | None = None
    best_epoch = 0
    stale = 0
    start_epoch = 1
    resumed_from = None
    stopped_early = False
    if resume and checkpoint is not None and checkpoint.is_file():
        current, best_state, state = load_checkpoint(checkpoint, optimizer)
        if state.get("config_digest") != config_digest:
            raise BadInput(
                f"checkpoint {checkpoint} belongs to a run with other settings",
                "resume with the same options, or start again without --resume",
            )
        model.load_state_dict(current, strict=False)
        history, best_value, best_epoch, stale = (
            state["history"], state["best_value"], state["best_epoch"], state["stale"]
        )
        stopped_early = state.get("stopped_early", False)
        start_epoch = state["epoch"] + 1
        resumed_from = state["epoch"]
        report("info", {"message": f"resumed after epoch {state['epoch']}"})

    report("start", {"epochs": settings.epochs, "steps_per_epoch": steps_per_epoch, "start_epoch": start_epoch})
    for epoch in range(start_epoch, settings.epochs + 1):
        if stopped_early:
            break
        model.train()
        order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        aug_gen = torch.Generator().manual_seed(seed * 200_003 + epoch)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size].numpy()
            global_step = (epoch - 1) * steps_per_epoch + step
            lr = lr_at(global_step, total_steps, warmup, settings.lr, settings.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = augment(to_float(train.store.batch(idx)), settings.augment, aug_gen).to(placement.device)
            labels = torch.as_tensor(train.labels[idx]).to(placement.device)
            feats = cache["train"][idx].to(placement.device) if "train" in cache else None
            with placement.autocast():
                logits = model(images, feats)
            loss = F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            report("step", {"epoch": epoch, "step": step + 1, "loss": losses[-1]})
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": lr}
        if val is not None:
            probs = predict_probs(model, val.store, settings.batch_size, placement, cache.get("val"))
            row.update(_val_row(probs, val.labels, weights))
            value = row["val_loss"] if settings.monitor == "loss" else row[f"val_{settings.monitor}"]
        else:
            value = row["train_loss"]
            higher = False
        improved = best_value is None or (value > best_value if higher else value < best_value)
        if improved:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = {k: v.clone() for k, v in model.trained_state().items()}
        else:
            stale += 1
        row["best"] = improved
        history.append(row)
        stopped_early = settings.patience is not None and stale >= settings.patience and epoch < settings.epochs
        if checkpoint is not None:
            save_checkpoint(
                checkpoint, model.trained_state(), best_state, optimizer,
                {"epoch": epoch, "history": history, "best_value": best_value, "best_epoch": best_epoch,
                 "stale": stale, "stopped_early": stopped_early, "config_digest": config_digest, "seed": seed},
            )
        report("epoch", row)
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return FitResult(history, best_epoch, best_value, stopped_early, resumed_from, time.perf_counter() - started, cache)


def _optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if not params:
        raise BadInput("nothing to train: the method leaves no trainable parameters", "choose another --method")
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def _val_row(probs: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None) -> dict[str, float]:
    logp = torch.log(torch.as_tensor(probs).clamp_min(1e-12))
    loss = F.nll_loss(logp, torch.as_tensor(labels), weight=None if weights is None else weights.cpu())
    from pathotune_cli.training.metrics import classification_metrics

    names = [str(i) for i in range(probs.shape[1])]
    metrics = classification_metrics(labels, probs, names, bootstrap=0)["metrics"]
    scores = {k: metrics[k]["value"] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    return {"val_loss": float(loss), **{f"val_{k}": v for k, v in scores.items()}}

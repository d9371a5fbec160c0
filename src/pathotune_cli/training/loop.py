"""The training loop: seeded per epoch, checkpointed per epoch, early-stopped on validation.

Every random draw of epoch ``e`` comes from generators seeded with ``(seed, e)``, and the learning rate is a
function of the step, so a run killed after any epoch and resumed ends with the same weights as one that
never stopped. Under ``torchrun`` (``training.distributed``) every rank walks the same global order and draws
the same augmentation numbers for the whole batch, takes its contiguous slice of it, and the summed gradients
are those of the global batch: a 2-rank run makes the 1-rank model up to float rounding. Validation and the
instance features are computed in slices and gathered, so every rank scores the same epochs alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pathotune_cli.config.run import KernelSpec, TrainSettings
from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.events import EpochDone, Reporter, StepDone, TrainingStarted, ignore, note
from pathotune_cli.hardware import Placement
from pathotune_cli.training.augment import augment, augment_draws
from pathotune_cli.training.checkpoint import load_checkpoint, save_checkpoint
from pathotune_cli.training.distributed import SINGLE, Dist, sharded, state_digest
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
    kernels: dict[str, str] = field(default_factory=dict)
    """The kernels each frozen part ran with (``PromptedModel.kernel_choices``)."""


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (N / (C_present * n_c)); classes without images get weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def encode_instances(model: Any, store: ImageStore, batch_size: int, placement: Placement,
                     dist: Dist = SINGLE) -> torch.Tensor:
    """Instance features of every tile, once (on the un-augmented tile); each rank encodes its slice."""

    def encode(lo: int, hi: int) -> torch.Tensor:
        feats = []
        for start in range(lo, hi, batch_size):
            images = to_float(store.batch(np.arange(start, min(start + batch_size, hi)))).to(placement.device)
            with placement.autocast():
                feats.append(model.instance_features(images).float().cpu())
        return torch.cat(feats) if feats else torch.empty(0)

    return sharded(dist, len(store), encode)


def predict_probs(
    model: Any, store: ImageStore, batch_size: int, placement: Placement, instance: torch.Tensor | None = None,
    dist: Dist = SINGLE,
) -> np.ndarray:
    """Class probabilities (N, C) for every tile in ``store``, in eval mode; each rank predicts its slice."""
    model.eval()

    def probs(lo: int, hi: int) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(lo, hi, batch_size):
                idx = np.arange(start, min(start + batch_size, hi))
                images = to_float(store.batch(idx)).to(placement.device)
                feats = instance[idx].to(placement.device) if instance is not None else None
                with placement.autocast():
                    logits = model(images, feats)
                out.append(torch.softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)

    return sharded(dist, len(store), probs).numpy()


@dataclass
class TrainState:
    """The loop's counters and the best tensors so far: what a checkpoint carries between epochs."""

    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor]
    best_value: float | None = None
    best_epoch: int = 0
    stale: int = 0
    stopped_early: bool = False
    next_epoch: int = 1
    resumed_from: int | None = None
    best_loss: float | None = None
    """The loss of the best epoch: it breaks ties of the monitored metric (a small validation set reaches
    balanced accuracy 1.0 early, and later epochs that keep it and lower the loss are better)."""

    def record(self, row: dict[str, Any], monitor: str, model: Any) -> None:
        """Score the epoch of ``row`` (validation, else training loss); keep its tensors if it is the best."""
        higher = HIGHER_IS_BETTER[monitor]
        if "val_loss" in row:
            value = row["val_loss"] if monitor == "loss" else row[f"val_{monitor}"]
            loss = row["val_loss"]
        else:
            value, higher, loss = row["train_loss"], False, row["train_loss"]
        better = self.best_value is None or (value > self.best_value if higher else value < self.best_value)
        tie_won = value == self.best_value and self.best_loss is not None and loss < self.best_loss
        if better or tie_won:
            self.best_value, self.best_loss, self.best_epoch, self.stale = value, loss, row["epoch"], 0
            self.best_state = {k: v.clone() for k, v in model.trained_state().items()}
        else:
            self.stale += 1
        row["best"] = better or tie_won


def fit(
    model: Any,
    train: Split,
    val: Split | None,
    settings: TrainSettings,
    placement: Placement,
    seed: int,
    checkpoint: Path | None = None,
    resume: bool = False,
    config_digest: str = "",
    report: Reporter = ignore,
    kernels: KernelSpec | None = None,
    dist: Dist = SINGLE,
) -> FitResult:
    """Train a prompted model's trainable tensors; leaves the best epoch's tensors loaded.

    Args:
        model: A ``PromptedModel`` (anything with its ``place``, ``trained_state`` and ``head``).
        train: Decoded training tiles and labels.
        val: Validation tiles, or None to early-stop on the training loss.
        settings: The recipe.
        placement: Device and precision.
        seed: Seeds every epoch's order and augmentation, so a resumed run ends as an uninterrupted one.
        checkpoint: Written after every epoch (and read with ``resume``).
        resume: Continue from ``checkpoint`` if it exists.
        config_digest: Must match the checkpoint's, or resuming is refused.
        report: Receives the loop's events.
        dist: The ranks under ``torchrun`` (``training.distributed``); the global batch stays
            ``settings.batch_size``, split over them. Only rank 0 writes the checkpoint.
    """
    started = time.perf_counter()
    model.place(placement, "training", kernels)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, settings)
    weights = (
        class_weights(train.labels, model.head.out_features).to(placement.device) if settings.class_weights else None
    )
    cache = _instance_cache(model, train, val, settings.batch_size, placement, report, dist)
    state = start_state(model, optimizer, checkpoint if resume else None, config_digest, report, dist)
    steps_per_epoch = max(1, -(-len(train.labels) // settings.batch_size))
    report(TrainingStarted(settings.epochs, steps_per_epoch, state.next_epoch))

    def one_epoch(epoch: int) -> dict[str, Any]:
        loss, lr = _train_epoch(model, optimizer, params, train, cache, weights, settings, placement, seed, epoch,
                                steps_per_epoch, report, dist)
        _require_finite(loss, params, epoch, settings.lr)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss, "lr": lr}
        _score_epoch(model, row, state, val, cache, weights, settings, placement, dist)
        return row

    run_epochs(model, optimizer, state, settings, one_epoch, checkpoint if dist.main else None, config_digest, seed,
               report)
    return FitResult(state.history, state.best_epoch, state.best_value, state.stopped_early, state.resumed_from,
                     time.perf_counter() - started, cache, model.kernel_choices())


def run_epochs(model: Any, optimizer: torch.optim.Optimizer, state: TrainState, settings: TrainSettings,
               one_epoch: Any, checkpoint: Path | None, config_digest: str, seed: int, report: Reporter) -> None:
    """Epochs from ``state.next_epoch`` until the last or early stopping, each trained and scored by
    ``one_epoch(epoch) -> history row``, checkpointed and reported; the best epoch's tensors are left loaded."""
    for epoch in range(state.next_epoch, settings.epochs + 1):
        if state.stopped_early:
            break
        row = one_epoch(epoch)
        state.history.append(row)
        state.stopped_early = (
            settings.patience is not None and state.stale >= settings.patience and epoch < settings.epochs
        )
        if checkpoint is not None:
            save_state(checkpoint, model, optimizer, state, epoch, config_digest, seed)
        report(EpochDone(row))
    model.load_trained(state.best_state)
    model.eval()


def _instance_cache(
    model: Any, train: Split, val: Split | None, batch_size: int, placement: Placement, report: Reporter,
    dist: Dist = SINGLE,
) -> dict[str, torch.Tensor]:
    """Instance features of every tile, once per run (on the un-augmented tile), where the method uses them."""
    cache: dict[str, torch.Tensor] = {}
    if model.needs_instance_features and model.settings.ivp.cache:
        count = len(train.labels) + (len(val.labels) if val else 0)
        note(report, f"encoding instance features once for {count} tiles")
        cache["train"] = encode_instances(model, train.store, batch_size, placement, dist)
        if val is not None:
            cache["val"] = encode_instances(model, val.store, batch_size, placement, dist)
    return cache


def start_state(model: Any, optimizer: torch.optim.Optimizer, checkpoint: Path | None, config_digest: str,
                report: Reporter, dist: Dist = SINGLE) -> TrainState:
    """A fresh loop state, or the one ``checkpoint`` holds (when it exists); every rank must start alike.

    Raises:
        BadInput: The ranks start from different epochs (a checkpoint only some of them can see) or tensors.
    """
    state = TrainState(history=[], best_state={k: v.clone() for k, v in model.trained_state().items()})
    if checkpoint is not None and checkpoint.is_file():
        state = restore_checkpoint(model, optimizer, checkpoint, config_digest, report)
    dist.agree("checkpoint (or none)", str(state.next_epoch),
               "put --out on a file system every node sees: ranks read the checkpoint rank 0 wrote")
    dist.agree("set of trainable tensors", state_digest(model.trained_state()),
               "every rank must build the same model: the same seed, settings and weights")
    return state


def restore_checkpoint(model: Any, optimizer: torch.optim.Optimizer, checkpoint: Path, config_digest: str,
             report: Reporter) -> TrainState:
    """The loop's state from a checkpoint of the same settings; the model and optimiser are restored in place."""
    current, best_state, saved = load_checkpoint(checkpoint, optimizer)
    if saved.get("config_digest") != config_digest:
        raise BadInput(
            f"checkpoint {checkpoint} belongs to a run with other settings",
            "resume with the same options, or start again without --resume",
        )
    model.load_trained(current)
    note(report, f"resumed after epoch {saved['epoch']}")
    return TrainState(
        history=saved["history"], best_state=best_state, best_value=saved["best_value"],
        best_epoch=saved["best_epoch"], stale=saved["stale"], best_loss=saved.get("best_loss"),
        stopped_early=saved.get("stopped_early", False),
        next_epoch=saved["epoch"] + 1, resumed_from=saved["epoch"],
    )


def _train_epoch(model: Any, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], train: Split,
                 cache: dict[str, torch.Tensor], weights: torch.Tensor | None, settings: TrainSettings,
                 placement: Placement, seed: int, epoch: int, steps_per_epoch: int,
                 report: Reporter, dist: Dist = SINGLE) -> tuple[float, float]:
    """One epoch of steps in a seeded order with seeded augmentation; returns (mean loss, last learning rate)."""
    model.train()
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    aug_gen = torch.Generator().manual_seed(seed * 200_003 + epoch)
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(round(settings.warmup_epochs * steps_per_epoch))
    losses, lr = [], settings.lr
    for step in range(steps_per_epoch):
        batch = order[step * settings.batch_size : (step + 1) * settings.batch_size].numpy()
        draws = augment_draws(len(batch), aug_gen, settings.augment)  # the whole batch's numbers, on every rank alike
        lo, hi = dist.bounds(len(batch))
        lr = lr_at((epoch - 1) * steps_per_epoch + step, total_steps, warmup, settings.lr, settings.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # the global batch's mean loss is the sum over ranks of each slice's summed loss over one denominator
        labels = torch.as_tensor(train.labels[batch])
        denominator = float(weights.cpu()[labels].sum()) if weights is not None else float(len(batch))
        optimizer.zero_grad(set_to_none=True)
        local = 0.0
        if hi > lo:
            idx = batch[lo:hi]
            images = augment(to_float(train.store.batch(idx)), settings.augment, draws=draws[lo:hi])
            feats = cache["train"][idx].to(placement.device) if "train" in cache else None
            with placement.autocast():
                logits = model(images.to(placement.device), feats)
            loss = F.cross_entropy(logits.float(), labels[lo:hi].to(placement.device), weight=weights,
                                   label_smoothing=settings.label_smoothing, reduction="sum")
            (loss / denominator).backward()
            local = float(loss.detach())
        (total,) = dist.sum_gradients(params, [local])
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        losses.append(total / denominator)
        report(StepDone(epoch, step + 1, losses[-1]))
    return float(np.mean(losses)), lr


def _require_finite(loss: float, params: list[torch.nn.Parameter], epoch: int, lr: float) -> None:
    """A run whose loss or weights went to NaN or inf stops with one line (exit 1), before it is scored."""
    if np.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in params):
        return
    raise PathotuneError(
        f"training diverged in epoch {epoch}: the {'loss' if not np.isfinite(loss) else 'weights'} went to NaN "
        f"or inf at learning rate {lr:g}",
        "lower the learning rate (--lr), or keep train.grad_clip on",
    )


def _score_epoch(model: Any, row: dict[str, Any], state: TrainState, val: Split | None, cache: dict[str, torch.Tensor],
                 weights: torch.Tensor | None, settings: TrainSettings, placement: Placement,
                 dist: Dist = SINGLE) -> None:
    """Validation scores into ``row`` (every rank's slice gathered first, so all ranks score alike); the monitored
    value decides the best epoch and the patience count."""
    if val is not None:
        probs = predict_probs(model, val.store, settings.batch_size, placement, cache.get("val"), dist)
        row.update(val_row(probs, val.labels, weights))
    state.record(row, settings.monitor, model)


def save_state(checkpoint: Path, model: Any, optimizer: torch.optim.Optimizer, state: TrainState, epoch: int,
          config_digest: str, seed: int) -> None:
    save_checkpoint(
        checkpoint, model.trained_state(), state.best_state, optimizer,
        {"epoch": epoch, "history": state.history, "best_value": state.best_value, "best_loss": state.best_loss,
         "best_epoch": state.best_epoch,
         "stale": state.stale, "stopped_early": state.stopped_early, "config_digest": config_digest, "seed": seed},
    )


def _optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if not params:
        raise BadInput("nothing to train: the method leaves no trainable parameters", "choose another --method")
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def val_row(probs: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None) -> dict[str, float]:
    logp = torch.log(torch.as_tensor(probs).clamp_min(1e-12))
    loss = F.nll_loss(logp, torch.as_tensor(labels), weight=None if weights is None else weights.cpu())
    from pathotune_cli.training.metrics import classification_metrics

    names = [str(i) for i in range(probs.shape[1])]
    metrics = classification_metrics(labels, probs, names, bootstrap=0)["metrics"]
    scores = {k: metrics[k]["value"] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    return {"val_loss": float(loss), **{f"val_{k}": v for k, v in scores.items()}}

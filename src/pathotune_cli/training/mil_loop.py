"""Training a slide-level model: one slide (bag) per step, from cached features or end to end from tiles.

From features (``--method linear``, two-stage ``--prompts``): each slide's tile features are computed once; the
aggregator trains on them. End to end (``pathotune``, ``vpt``): prompts and aggregator train together from slide
labels with the two-pass gradient of Prompt-MIL (Zhang et al., MICCAI 2023): a no-grad pass over the slide's
sampled tiles gives their features; the aggregator's loss gives its own gradients and the gradient with respect
to those features; then each chunk of tiles is run again with gradients and back-propagated with its slice of
that gradient. The prompts' gradient is the same as back-propagating the whole slide at once, and memory is one
chunk's activations, not the slide's. Both passes see the same pixels: augmentation is drawn from a generator
seeded per (seed, epoch, slide, chunk), and the frozen backbone has no dropout.

Seeds, checkpoints, resume and early stopping work as in ``training.loop``. A step takes
``mil.slides_per_step`` slides (default 1) and averages their gradients; under ``torchrun`` each rank takes its
share of every step's slides (a rank left without one adds zeros) and the gradients are summed over the ranks,
so the model is the one-process model of the same ``slides_per_step`` up to float rounding. Dropout in the
aggregator is seeded per (seed, epoch, slide), not per process. Aggregator-only training stays in one process
(``runs.slide_level.tune``): it reads cached features and takes seconds per epoch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pathotune_cli.config.run import KernelSpec, MILSettings, TrainSettings
from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, StepDone, TrainingStarted, ignore
from pathotune_cli.hardware import Placement
from pathotune_cli.training.augment import augment
from pathotune_cli.training.distributed import SINGLE, Dist, sharded
from pathotune_cli.training.images import to_float
from pathotune_cli.training.loop import (
    FitResult,
    TrainState,
    class_weights,
    run_epochs,
    start_state,
    val_row,
)


class TileBags(Protocol):
    """Tiles of each slide, read on demand (``runs`` opens the slides; training never sees a reader)."""

    def count(self, slide: int) -> int:
        """Tiles of slide ``slide``."""

    def tiles(self, slide: int, index: np.ndarray) -> torch.Tensor:
        """uint8 tiles (n, 3, S, S) of slide ``slide`` at tile indices ``index``."""


@dataclass
class Bags:
    """The slides of one split: their labels, and either cached features or tiles."""

    labels: np.ndarray
    features: list[torch.Tensor] | None = None
    """Per slide (N_i, D) float32 tile features, for aggregator-only training."""
    tiles: TileBags | None = None
    """Per slide tiles, for end-to-end training."""

    def __len__(self) -> int:
        return len(self.labels)


def fit_mil(
    model: Any, train: Bags, val: Bags | None, settings: TrainSettings, mil: MILSettings, placement: Placement,
    seed: int, checkpoint: Path | None = None, resume: bool = False, config_digest: str = "",
    report: Reporter = ignore, kernels: KernelSpec | None = None, dist: Dist = SINGLE,
) -> FitResult:
    """Train a ``SlideModel`` slide by slide; leaves the best epoch's tensors loaded.

    With ``train.features`` only the aggregator trains (the tile encoder's tensors are frozen); with
    ``train.tiles`` the tile encoder's prompts train too, by the two-pass gradient. ``dist``: the ranks that
    share every step's slides (only rank 0 writes the checkpoint).
    """
    started = time.perf_counter()
    end_to_end = train.features is None
    model.place(placement, "training" if end_to_end else "inference", kernels)
    if not end_to_end:
        model.tiles.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, settings, mil, end_to_end)
    weights = class_weights(train.labels, model.aggregator.num_classes).to(placement.device)
    state = start_state(model, optimizer, checkpoint if resume else None, config_digest, report, dist)
    report(TrainingStarted(settings.epochs, -(-len(train) // mil.slides_per_step), state.next_epoch))

    def one_epoch(epoch: int) -> dict[str, Any]:
        loss = _train_epoch(model, optimizer, params, train, weights, settings, mil, placement, seed, epoch, report,
                            dist)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss, "lr": mil.lr}
        _score(model, row, state, val, weights, settings, mil, placement, dist)
        return row

    run_epochs(model, optimizer, state, settings, one_epoch, checkpoint if dist.main else None, config_digest, seed,
               report)
    return FitResult(state.history, state.best_epoch, state.best_value, state.stopped_early, state.resumed_from,
                     time.perf_counter() - started, kernels=model.tiles.kernel_choices())


def two_pass_backward(model: Any, tiles: torch.Tensor, label: int, weights: torch.Tensor | None, chunk: int,
                      placement: Placement, augment_chunk: Callable[[torch.Tensor, int], torch.Tensor],
                      scale: float = 1.0) -> float:
    """One slide's loss, with the gradients of the aggregator and the prompts (times ``scale``) accumulated as a
    whole-slide backward would give them, holding one chunk's activations at a time; returns the loss.

    ``augment_chunk(images, chunk_index)`` must give the same pixels when called twice with the same arguments.
    """
    pieces, instance = [], []
    with torch.no_grad():
        for j, start in enumerate(range(0, len(tiles), chunk)):
            images = augment_chunk(to_float(tiles[start : start + chunk]).to(placement.device), j)
            inst = model.tiles.instance_features(images) if model.tiles.needs_instance_features else None
            instance.append(inst)
            with placement.autocast():
                pieces.append(model.tile_features(images, inst).float())
    features = torch.cat(pieces).requires_grad_(True)
    loss = model.aggregator.loss(features, label, weights)
    (loss * scale).backward()
    grad = features.grad
    for j, start in enumerate(range(0, len(tiles), chunk)):
        images = augment_chunk(to_float(tiles[start : start + chunk]).to(placement.device), j)
        with placement.autocast():
            again = model.tile_features(images, instance[j]).float()
        again.backward(grad[start : start + len(images)])
    return float(loss.detach())


def slide_probabilities(
    model: Any, bags: Bags, mil: MILSettings, placement: Placement, slides: range | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities (S, C) and per-slide attention over every tile (or the ``slides`` given), in eval mode."""
    logits, attention = slide_logits(model, bags, mil, placement, slides)
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy(), attention


def slide_logits(model: Any, bags: Bags, mil: MILSettings, placement: Placement,
                 slides: range | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Slide logits (S, C) float32 and per-slide attention over every tile (or the ``slides`` given), in eval mode."""
    model.eval()
    logits, attention = [], []
    with torch.no_grad():
        for i in slides if slides is not None else range(len(bags)):
            features = _bag_features(model, bags, i, mil, placement)
            out, weights = model(features)
            logits.append(out.float().cpu())
            attention.append(weights.float().cpu().numpy())
    empty = np.zeros((0, model.aggregator.num_classes), np.float32)
    return (torch.stack(logits).numpy() if logits else empty), attention


def tile_features_of(model: Any, tiles: torch.Tensor, chunk: int, placement: Placement) -> torch.Tensor:
    """Features (N, D) of uint8 tiles (N, 3, S, S), in no-grad chunks."""
    out = []
    with torch.no_grad():
        for start in range(0, len(tiles), chunk):
            images = to_float(tiles[start : start + chunk]).to(placement.device)
            with placement.autocast():
                out.append(model.tile_features(images).float())
    return torch.cat(out) if out else torch.zeros(0, model.feature_dim, device=placement.device)


def _bag_features(model: Any, bags: Bags, i: int, mil: MILSettings, placement: Placement) -> torch.Tensor:
    if bags.features is not None:
        return bags.features[i].to(placement.device)
    assert bags.tiles is not None
    index = np.arange(bags.tiles.count(i))
    return tile_features_of(model, bags.tiles.tiles(i, index), mil.chunk, placement)


def _train_epoch(model: Any, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], train: Bags,
                 weights: torch.Tensor, settings: TrainSettings, mil: MILSettings, placement: Placement, seed: int,
                 epoch: int, report: Reporter, dist: Dist = SINGLE) -> float:
    """One epoch: every training slide once, in a seeded order, ``mil.slides_per_step`` slides per optimiser step
    (each rank its share of them), their gradients averaged."""
    model.train()
    order = np.random.default_rng([seed, epoch]).permutation(len(train))
    per_step = mil.slides_per_step
    losses = []
    for step, start in enumerate(range(0, len(order), per_step), start=1):
        slides = order[start : start + per_step]
        lo, hi = dist.bounds(len(slides))
        optimizer.zero_grad(set_to_none=True)
        local = 0.0
        for i in slides[lo:hi]:
            with _slide_rng(placement, seed, epoch, int(i)):  # dropout as one process would draw it
                local += _slide_step(model, train, int(i), weights, settings, mil, placement, seed, epoch,
                                     1.0 / len(slides))
        (total,) = dist.sum_gradients(params, [local])
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        losses.append(total / len(slides))
        report(StepDone(epoch, step, losses[-1]))
    return float(np.mean(losses)) if losses else 0.0


def _slide_step(model: Any, train: Bags, i: int, weights: torch.Tensor, settings: TrainSettings, mil: MILSettings,
                placement: Placement, seed: int, epoch: int, scale: float) -> float:
    """One slide's gradients, scaled by ``scale`` (1 / the step's slides), accumulated; returns its loss."""
    label = int(train.labels[i])
    if train.features is not None:
        loss = model.aggregator.loss(train.features[i].to(placement.device), label, weights)
        (loss * scale).backward()
        return float(loss.detach())
    assert train.tiles is not None
    return _end_to_end_step(model, train.tiles, i, label, weights, settings, mil, placement, seed, epoch, scale)


@contextlib.contextmanager
def _slide_rng(placement: Placement, seed: int, epoch: int, slide: int) -> Iterator[None]:
    """The global generators forked and seeded per (seed, epoch, slide), restored afterwards."""
    devices = [torch.device(placement.device).index or 0] if placement.device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(np.random.default_rng([seed, epoch, slide, 7]).integers(2**62)))
        yield


def _end_to_end_step(model: Any, tiles: TileBags, i: int, label: int, weights: torch.Tensor,
                     settings: TrainSettings, mil: MILSettings, placement: Placement, seed: int, epoch: int,
                     scale: float = 1.0) -> float:
    count = tiles.count(i)
    rng = np.random.default_rng([seed, epoch, i])
    index = np.sort(rng.choice(count, size=min(count, mil.tiles_per_slide), replace=False))

    def augment_chunk(images: torch.Tensor, j: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(seed * 1_000_003 + epoch * 10_007 + i * 101 + j))
        return augment(images.cpu(), settings.augment, generator).to(images.device)

    return two_pass_backward(model, tiles.tiles(i, index), label, weights, mil.chunk, placement, augment_chunk,
                             scale)


def _score(model: Any, row: dict[str, Any], state: TrainState, val: Bags | None, weights: torch.Tensor,
           settings: TrainSettings, mil: MILSettings, placement: Placement, dist: Dist = SINGLE) -> None:
    """Validation scores of the epoch into ``row`` (each rank scores its share of the slides, gathered before the
    metrics); the monitored value decides the best epoch."""
    if val is not None and len(val):
        probs = sharded(dist, len(val), lambda lo, hi: torch.as_tensor(
            slide_probabilities(model, val, mil, placement, range(lo, hi))[0], dtype=torch.float32)).numpy()
        row.update(val_row(probs, val.labels, weights))
    state.record(row, settings.monitor, model)


def _optimizer(model: Any, settings: TrainSettings, mil: MILSettings, end_to_end: bool) -> torch.optim.Optimizer:
    """Adam for the aggregator (CLAM's recipe), with the prompts at their own rate when they train too."""
    groups = [{"params": [p for p in model.aggregator.parameters() if p.requires_grad], "lr": mil.lr,
               "weight_decay": mil.weight_decay}]
    prompts = [p for p in model.tiles.parameters() if p.requires_grad] if end_to_end else []
    if prompts:
        groups.append({"params": prompts, "lr": mil.prompt_lr or settings.lr, "weight_decay": settings.weight_decay})
    if not groups[0]["params"]:
        raise BadInput("nothing to train: the aggregator has no parameters", "choose another mil.aggregator")
    return torch.optim.Adam(groups)

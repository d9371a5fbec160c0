"""Tuning step: images/s of the real training loop against the same backbone's forward pass.

The step is ``training.loop.fit`` itself (augmentation, autocast forward with cached instance features, loss,
backward, gradient clipping, AdamW), timed from its per-step reports: the first step after the instance
cache is built is a warm-up, the fastest of the others is the step time. The baselines, measured in the
same process at the same batch and precision (``hardware.place("cpu", "auto")``):

- **forward only**: the bare frozen backbone on in-memory tensors, no grad. A pathotune step runs a forward
  and a backward (input gradients only) through every block, so its floor is about 0.5 of this.
- **full fine-tuning**: the same ``fit`` with ``method="full"`` (every weight trains).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Figure, info, log

SETUPS = {
    # role in the figure keys: (backbone size, batch, timed steps after one warm-up step)
    "small": ("vit_small", 32, 3),
    "base": ("vit_base", 16, 3),
}
QUICK_SETUPS = {"small": ("vit_tiny", 8, 2), "base": ("vit_tiny", 4, 1)}


def step_rate(
    size: str, method: str, batch: int, steps: int, placement: Any, images: Any, labels: Any
) -> tuple[float, dict]:
    """Images per second of ``fit``'s step for ``method`` (one warm-up step, then ``steps`` timed)."""
    import numpy as np
    import torch

    from benchmarks.models import MemoryStore, preset, task
    from pathotune_cli.config.run import PromptSettings, TrainSettings
    from pathotune_cli.engine.build import build_prompted_model
    from pathotune_cli.training.loop import Split, fit

    torch.manual_seed(0)
    built = build_prompted_model(task(), preset(size), PromptSettings(method=method))
    model = built.model
    n = batch * (steps + 1)
    train = Split(MemoryStore(images[:n]), np.asarray(labels[:n]))
    settings = TrainSettings(epochs=1, batch_size=batch, patience=None, warmup_epochs=0.0)
    stamps: list[float] = []
    marks: dict[str, float] = {}

    def report(event: Any) -> None:
        from pathotune_cli.events import Message, StepDone, TrainingStarted

        now = time.perf_counter()
        if isinstance(event, TrainingStarted):
            marks["start"] = now
            stamps.append(now)
        elif isinstance(event, StepDone):
            stamps.append(now)
        elif isinstance(event, Message) and "encoding instance features" in event.text:
            marks["cache_start"] = now

    start = time.perf_counter()
    fit(model, train, None, settings, placement, seed=0, report=report)
    total = time.perf_counter() - start
    durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    timed = durations[1:]
    rate = batch / min(timed)  # the least disturbed step, as for the baselines
    detail = {
        "step_seconds": [round(d, 3) for d in durations],
        "warmup_seconds": round(durations[0], 3),
        "cache_seconds": round(marks["start"] - marks["cache_start"], 3) if "cache_start" in marks else None,
        "fit_seconds": round(total, 2),
        "trainable_parameters": model.trainable_parameters(),
        "instance_images_encoded": model.instance_images_encoded,
    }
    del model, built
    return rate, detail


def forward_only(size: str, batch: int, repeats: int, placement: Any, images: Any) -> float:
    """Images per second of the bare backbone's forward at ``batch``."""
    import torch

    from benchmarks.models import forward_rate, preset
    from pathotune_cli.backbones import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(preset(size))
    return forward_rate(backbone, images, placement, batch, repeats, stat="best")


def run(work: Any, quick: bool, seed: int = 0) -> list[Figure]:
    """Every tuning figure."""
    import torch

    from benchmarks.models import random_images
    from pathotune_cli.hardware import place

    placement = place("cpu", "auto")
    figures = [
        info(
            "tuning.precision",
            "tuning",
            "precision (hardware.place('cpu', 'auto'))",
            None,
            "",
            note=f"{placement.precision}: {placement.reason}; {torch.get_num_threads()} torch threads",
            precision=placement.precision,
        )
    ]
    setups = QUICK_SETUPS if quick else SETUPS
    for role, (size, batch, steps) in setups.items():
        images = random_images(batch * (steps + 1), seed=seed)
        labels = torch.arange(images.shape[0]) % 4
        log(f"tuning: {size} forward only, batch {batch}")
        fwd = forward_only(size, batch, steps + 1, placement, images)
        log(f"tuning: {size} pathotune step, batch {batch}")
        tuned, tuned_detail = step_rate(size, "pathotune", batch, steps, placement, images, labels)
        log(f"tuning: {size} full fine-tuning step, batch {batch}")
        full, full_detail = step_rate(size, "full", batch, steps, placement, images, labels)
        label = size.replace("_", "-")
        figures += [
            info(f"tuning.{role}.forward", "tuning", f"{label} forward only (b{batch})", fwd, "img/s"),
            info(
                f"tuning.{role}.pathotune_step",
                "tuning",
                f"{label} pathotune step (b{batch})",
                tuned,
                "img/s",
                note=f"{tuned_detail['trainable_parameters']:,} trainable; steps {tuned_detail['step_seconds']} s",
                **tuned_detail,
            ),
            info(
                f"tuning.{role}.full_step",
                "tuning",
                f"{label} full fine-tuning step (b{batch})",
                full,
                "img/s",
                note=f"steps {full_detail['step_seconds']} s",
                **full_detail,
            ),
            Figure(
                f"tuning.{role}.step_vs_forward",
                "tuning",
                f"{label} pathotune step vs forward only",
                tuned,
                "img/s",
                fwd,
                "forward only, same batch and precision",
                0.40,
                note="floor of a backward through every block ~0.5",
            ),
            Figure(
                f"tuning.{role}.step_vs_full",
                "tuning",
                f"{label} pathotune step vs full fine-tuning",
                tuned,
                "img/s",
                full,
                "full fine-tuning step",
                1.5,
            ),
        ]
    return figures

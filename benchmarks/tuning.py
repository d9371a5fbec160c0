"""Tuning step: images/s of the real training loop against the fastest forward pass of the same backbone.

The step is ``training.loop.fit`` itself (augmentation, autocast forward with cached instance features, loss,
backward, gradient clipping, AdamW) with the kernels ``fit`` picks (``backbones.kernels``: measured on this
machine for the training pass), timed from its per-step reports. The baseline is the **fastest forward** of the
same backbone: the bare frozen backbone on in-memory tensors, no grad, at the same batch and precision, with
every kernel choice pathotune has (fused or plain attention; fp32 or, in bf16, bf16-stored weights), the best
of them; so a slow baseline can never flatter the ratio. A pathotune step runs a forward and a backward (input
gradients only) through every block, so its floor is about 0.5 of that forward in fp32; in bf16 the CPU
backward costs more.

Both sides are measured interleaved: after each training step (reported by ``fit``), every forward candidate
runs once, and the step's clock restarts after them. The ratio is best step rate over best forward rate; a pair
whose bests came from different moments of a drifting machine (``core.Interleaved.drift``) is measured again.
Full fine-tuning (``method="full"``) is context, not judged: a step that trains 17 prompt tokens cannot reach
1.5x one that trains every weight, because both run the same backward through every block.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Figure, Interleaved, info, log

SETUPS = {
    # role in the figure keys: (backbone size, batch, timed steps after one warm-up step)
    "small": ("vit_small", 32, 4),
    "base": ("vit_base", 16, 4),
}
QUICK_SETUPS = {"small": ("vit_tiny", 8, 2), "base": ("vit_tiny", 4, 2)}
MAX_DRIFT = 0.10


class ForwardCandidates:
    """The bare backbone's forward under each kernel choice pathotune can make at this placement."""

    def __init__(self, size: str, batch: int, placement: Any, images: Any) -> None:
        import torch

        from benchmarks.models import preset
        from pathotune_cli.backbones import load_backbone
        from pathotune_cli.backbones.kernels import candidates

        torch.manual_seed(0)
        self.backbone = load_backbone(preset(size)).to(placement.device).eval()
        self.placement = placement
        self.x = images[:batch].float().div_(255.0).to(placement.device)
        self.choices = candidates(self.backbone, placement.precision, placement.device)
        self.rates: dict[str, list[float]] = {c.describe(): [] for c in self.choices}
        for choice in self.choices:  # one untimed warm-up each
            self._once(choice)

    def _once(self, choice: Any) -> float:
        import torch

        self.backbone.apply_kernels(choice, self.placement)
        with torch.no_grad(), self.placement.autocast():
            start = time.perf_counter()
            self.backbone(self.x)
            seconds = time.perf_counter() - start
        return self.x.shape[0] / seconds

    def measure_round(self) -> float:
        """Run every candidate once; returns the fastest rate of this round."""
        best = 0.0
        for choice in self.choices:
            rate = self._once(choice)
            self.rates[choice.describe()].append(rate)
            best = max(best, rate)
        return best

    def fastest(self) -> tuple[str, float]:
        """(the candidate with the best rate, that rate)."""
        name = max(self.rates, key=lambda k: max(self.rates[k]))
        return name, max(self.rates[name])


def step_rates(size: str, method: str, batch: int, steps: int, placement: Any, images: Any, labels: Any,
               between: Any = None, dist: Any = None) -> tuple[list[float], dict]:
    """Rates of ``fit``'s timed steps for ``method`` (one warm-up step, then ``steps``); ``between()`` runs after
    each timed step with the clock stopped (the interleaved baseline). ``dist``: the ranks sharing each global
    batch of ``batch`` (``training.distributed``; None: this process alone)."""
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
    durations: list[float] = []
    clock: dict[str, float] = {}

    def report(event: Any) -> None:
        from pathotune_cli.events import Message, StepDone, TrainingStarted

        now = time.perf_counter()
        if isinstance(event, TrainingStarted):
            clock["step_start"] = now
        elif isinstance(event, StepDone):
            durations.append(now - clock["step_start"])
            if between is not None and len(durations) > 1:  # the warm-up step is not paired
                between()
            clock["step_start"] = time.perf_counter()
        elif isinstance(event, Message) and "encoding instance features" in event.text:
            clock["cache_start"] = now

    start = time.perf_counter()
    fit(model, train, None, settings, placement, seed=0, report=report, **({"dist": dist} if dist else {}))
    detail = {
        "step_seconds": [round(d, 3) for d in durations],
        "warmup_seconds": round(durations[0], 3),
        "fit_seconds": round(time.perf_counter() - start, 2),
        "trainable_parameters": model.trainable_parameters(),
        "kernels": model.kernel_choices(),
    }
    del model, built
    return [batch / d for d in durations[1:]], detail


def step_against_forward(size: str, batch: int, steps: int, placement: Any, images: Any, labels: Any) -> tuple:
    """(Interleaved of step and fastest-forward rates, the forward candidates, the step's detail).

    A pass whose step and forward drifted apart (``core.Interleaved.drift``) is measured again, up to twice;
    the pass that drifted least is kept.
    """
    forward = ForwardCandidates(size, batch, placement, images)
    passes = []
    for attempt in range(3):
        paired: list[float] = []
        rates, detail = step_rates(size, "pathotune", batch, steps, placement, images, labels,
                                   between=lambda paired=paired: paired.append(forward.measure_round()))
        passes.append((Interleaved({"step": rates, "forward": paired}), detail))
        drift = passes[-1][0].drift("step", "forward")
        if drift <= MAX_DRIFT:
            break
        log(f"tuning: {size} step and forward drifted apart by {drift:.0%} (pass {attempt + 1}); again")
    result, detail = min(passes, key=lambda p: p[0].drift("step", "forward"))
    result.remeasured = len(passes) - 1
    return result, forward, detail


def run(work: Any, quick: bool, seed: int = 0) -> list[Figure]:
    """Every tuning figure."""
    import torch

    from benchmarks.models import random_images
    from pathotune_cli.hardware import place

    placement = place("cpu", "auto")
    figures = [info("tuning.precision", "tuning", "precision (hardware.place('cpu', 'auto'))", None, "",
                    note=f"{placement.precision}: {placement.reason}; {torch.get_num_threads()} torch threads",
                    precision=placement.precision)]
    for role, (size, batch, steps) in (QUICK_SETUPS if quick else SETUPS).items():
        images = random_images(batch * (steps + 1), seed=seed)
        labels = torch.arange(images.shape[0]) % 4
        log(f"tuning: {size} pathotune steps interleaved with every forward kernel, batch {batch}")
        paired, forward, detail = step_against_forward(size, batch, steps, placement, images, labels)
        log(f"tuning: {size} full fine-tuning steps (context), batch {batch}")
        full_rates, full_detail = step_rates(size, "full", batch, max(1, steps // 2), placement, images, labels)
        figures += _figures(role, size.replace("_", "-"), batch, paired, forward, detail, max(full_rates),
                            full_detail)
    return figures


def _figures(role: str, label: str, batch: int, paired: Interleaved, forward: ForwardCandidates, detail: dict,
             full: float, full_detail: dict) -> list[Figure]:
    fastest, fastest_rate = forward.fastest()
    step = paired.best("step")
    step_kernels = detail["kernels"].get("backbone", "?")
    candidates = "; ".join(f"{k} {max(v):.1f}" for k, v in forward.rates.items())
    return [
        info(f"tuning.{role}.forward", "tuning", f"{label} fastest forward (b{batch})", fastest_rate, "img/s",
             note=f"{fastest}; every candidate: {candidates} img/s",
             kernels=fastest, candidates={k: [round(r, 2) for r in v] for k, v in forward.rates.items()}),
        info(f"tuning.{role}.pathotune_step", "tuning", f"{label} pathotune step (b{batch})", step, "img/s",
             note=f"{detail['trainable_parameters']:,} trainable; {step_kernels}; steps {detail['step_seconds']} s",
             **detail),
        info(f"tuning.{role}.full_step", "tuning", f"{label} full fine-tuning step (b{batch})", full, "img/s",
             note=f"steps {full_detail['step_seconds']} s", **full_detail),
        Figure(f"tuning.{role}.step_vs_forward", "tuning", f"{label} pathotune step vs fastest forward", step,
               "img/s", paired.best("forward"), f"fastest forward ({fastest}), interleaved", 0.40,
               note=f"step: {step_kernels}; drift {paired.drift('step', 'forward'):.0%}, "
                    f"{paired.remeasured} re-measured",
               extra={"step_kernels": step_kernels, "forward_kernels": fastest, **paired.to_dict()}),
        Figure(f"tuning.{role}.step_vs_full", "tuning", f"{label} pathotune step vs full fine-tuning", step,
               "img/s", full, "full fine-tuning step",
               note="context: method-bound near 1.3-1.4x (the same backward through every block)"),
    ]

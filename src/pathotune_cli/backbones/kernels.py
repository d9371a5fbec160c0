"""Which kernels a frozen backbone runs with, chosen by measurement on the machine it runs on, not by a rule.

The same code lost 2x on one CPU kind with choices made on another: PyTorch's fused CPU attention is 1.2-1.6x slower
than plain ``q @ k^T, softmax, @ v`` in bf16 on an AMD Zen 4 and 1.7-2.4x faster on an Intel Xeon with AMX, and
storing the frozen Linear weights in bf16 (instead of casting them on every autocast op) is worth 40% of a bf16
training step on one and little on the other. So for each (backbone shape, device, precision, pass) pathotune
times the candidates once, on a small synthetic batch, and keeps the fastest:

- ``attention``: ``fused`` (``scaled_dot_product_attention``) or ``plain``;
- ``weights``: ``fp32`` (autocast casts per op) or the autocast dtype, ``bf16`` or ``fp16`` (frozen Linear
  weights and biases stored in it, half their memory on the device; the values are those autocast would use,
  so results are the same up to summation order).

The choice is cached per machine (CPU model or GPU name), torch version and backbone shape in
``$XDG_CACHE_HOME/pathotune/kernels.json`` (else ``~/.cache/pathotune``), so it is measured once; ``doctor``
shows it and ``runtime.attention`` / ``runtime.weights`` (``--set`` or ``--kernels``) pin it. Families without
choices (open_clip towers, CONCH) run as they are.
"""

from __future__ import annotations

import itertools
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pathotune_cli.config.run import KernelSpec
from pathotune_cli.errors import BadInput
from pathotune_cli.files import cache_dir, read_json_cache, update_json_cache

ATTENTION = ("fused", "plain")
CALIBRATION_BATCH = 4
CALIBRATION_REPEATS = 2
"""Small, because it runs once per machine and backbone (a ViT-g on a CPU takes about a second an image); the
ratios between candidates, not their rates, decide."""


@dataclass(frozen=True)
class KernelChoice:
    """One way to run a frozen backbone."""

    attention: str = "fused"
    weights: str = "fp32"

    def describe(self) -> str:
        """``fused attention, fp32 weights``."""
        return f"{self.attention} attention, {self.weights} weights"


def candidates(backbone: Any, precision: str, device: str, pinned: KernelSpec | None = None) -> list[KernelChoice]:
    """The choices worth timing for this backbone and placement (respecting what is pinned)."""
    pinned = pinned or KernelSpec()
    timm = backbone.attention_choices()  # the families whose modules pathotune knows (timm ViTs, PathoDuet)
    attention = ATTENTION if timm else ("fused",)
    weights = ("fp32", precision) if precision in ("bf16", "fp16") and timm else ("fp32",)  # autocast's own dtype
    if pinned.attention != "auto":
        attention = (pinned.attention,) if pinned.attention in attention else attention[:1]
    check_pinned_weights(pinned, precision)
    if pinned.weights != "auto":
        weights = (pinned.weights,) if pinned.weights in weights else ("fp32",)  # families without choices
    return [KernelChoice(a, w) for a, w in itertools.product(attention, weights)]


def check_pinned_weights(pinned: KernelSpec, precision: str) -> None:
    """Refuse frozen weights pinned to a dtype this run's autocast does not compute in (never fp32 instead).

    Raises:
        BadInput: e.g. ``weights=bf16`` under fp32, naming the fix.
    """
    mismatch = pinned.precision_mismatch(precision)
    if mismatch:
        raise BadInput(*mismatch)


def choose(backbone: Any, placement: Any, pass_: str, pinned: KernelSpec | None = None,
           timer: Callable[[], float] = time.perf_counter, cache: Path | None = None) -> KernelChoice:
    """The fastest of ``candidates`` for ``backbone`` on ``placement`` and ``pass_``: cached, else measured."""
    options = candidates(backbone, placement.precision, placement.device, pinned)
    if len(options) == 1:
        return options[0]
    cache = cache or cache_path()
    key = cache_key(backbone, placement, pass_, options)
    found = read_json_cache(cache).get(key)
    if found is not None:
        return KernelChoice(**found["choice"])
    print(f"pathotune: timing {len(options)} kernel choices for {backbone.preset.name} ({placement.device} "
          f"{placement.precision}, {pass_}) once on this machine; cached in {cache}", file=sys.stderr)
    timings = measure_in_turn(backbone, placement, pass_, options, timer)
    best = min(timings, key=timings.get)
    seconds = {c.describe(): round(t, 5) for c, t in timings.items()}
    update_json_cache(cache, key, {"choice": asdict(best), "seconds": seconds,
                                   "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return best


def measure_in_turn(backbone: Any, placement: Any, pass_: str, options: list[KernelChoice],
                    timer: Callable[[], float] = time.perf_counter) -> dict[KernelChoice, float]:
    """Each choice's best time of ``CALIBRATION_REPEATS`` passes, the choices taking turns pass by pass (A B A B,
    after one untimed pass each), so a machine whose speed drifts meets every choice alike."""
    import torch

    size = backbone.input_size
    images = torch.rand(CALIBRATION_BATCH, 3, size, size, device=placement.device)
    best = {choice: float("inf") for choice in options}
    for repeat in range(CALIBRATION_REPEATS + 1):
        for choice in options:
            backbone.apply_kernels(choice, placement)
            seconds = one_pass(backbone, placement, pass_, images, timer)
            if repeat:
                best[choice] = min(best[choice], seconds)
    return best


def one_pass(backbone: Any, placement: Any, pass_: str, images: Any,
             timer: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one forward (``inference``) or forward and input-gradient backward (``training``)."""
    import torch

    x = images.clone().requires_grad_(pass_ == "training")
    start = timer()
    with placement.autocast(), torch.set_grad_enabled(pass_ == "training"):
        out = backbone(x)
        if pass_ == "training":
            out.float().sum().backward()
    if placement.device.startswith("cuda"):
        torch.cuda.synchronize()
    return timer() - start


def cache_key(backbone: Any, placement: Any, pass_: str, options: list[KernelChoice]) -> str:
    """Machine, torch version, backbone shape, device, precision, pass and the candidates timed."""
    import torch

    preset = backbone.preset
    shape = f"{preset.family}:{preset.model}:w{backbone.width}:b{backbone.num_blocks}:s{backbone.input_size}"
    names = "+".join(c.describe() for c in options)
    return "|".join([machine(placement.device), f"torch {torch.__version__}", shape, placement.device,
                     placement.precision, pass_, names])


def machine(device: str) -> str:
    """The CPU model (``lscpu``'s ``Model name``) or the GPU's name: what a kernel choice depends on."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/pathotune/kernels.json``, else ``~/.cache/pathotune/kernels.json``."""
    return cache_dir() / "kernels.json"


def cached_choices(cache: Path | None = None) -> dict[str, Any]:
    """Every choice measured on this machine so far (for ``doctor``)."""
    return read_json_cache(cache or cache_path())

"""Which device and which precision: bf16 autocast where the hardware runs it fast, else fp32.

Sits at the bottom of the layers beside ``config`` so engine, training and runs agree on one answer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Placement:
    """Where a model runs and in which autocast dtype (None: plain fp32)."""

    device: str
    precision: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for ``torch.autocast``, or None for fp32."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """An autocast context for this placement (a no-op in fp32)."""
        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a cluster's job limits set), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16: the CPUs where bf16 autocast runs ViTs 2-3x faster than fp32."""
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    try:
        return bool(amx() or avx())
    except RuntimeError:
        return False


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks the first CUDA GPU when one works, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {device} asked for a GPU but CUDA is not available here", "use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise BadInput(f"unknown device '{device}'", "use auto, cpu, cuda or cuda:N")
    return device


def rank_gpu(local_rank: int) -> str:
    """This node's GPU for the process of rank ``local_rank`` on it: ``cuda:<local_rank % GPUs visible>``.

    ``cuda:0`` where the process sees one GPU, as each task does under ``srun --gpus-per-task=1`` or
    ``--gpu-bind=single:1`` (SLURM hides the others), and ``cuda:<local_rank>`` where every process sees every GPU
    of the node (torchrun).
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{local_rank % count}" if count else "cuda"


def place(device: str = "auto", precision: str = "auto") -> Placement:
    """Resolve ``--device`` and ``--precision`` into a placement, with the reason for the choice."""
    if precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{precision}'", f"use one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    if precision != "auto":
        if precision == "fp16" and dev == "cpu":
            raise BadInput("fp16 autocast is for GPUs", "use --precision bf16 or fp32 on a CPU")
        return Placement(dev, precision, "requested")
    if dev.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return Placement(dev, "bf16", "GPU with bf16")
        return Placement(dev, "fp16", "GPU without bf16")
    if cpu_has_fast_bf16():
        return Placement(dev, "bf16", "CPU with AMX/AVX512-BF16")
    return Placement(dev, "fp32", "CPU without fast bf16")

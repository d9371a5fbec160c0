"""A rank's GPU: ``cuda:<local_rank>`` where every rank of the node sees every GPU, ``cuda:0`` where SLURM shows
each task only its own (``srun --gpus-per-task=1``, ``--gpu-bind=single:1``). No GPU is needed: torch.cuda's
answers are replaced."""

from __future__ import annotations

import pytest
import torch

from pathotune_cli.cluster import Shard, World
from pathotune_cli.hardware import rank_gpu
from pathotune_cli.runs.per_slide.devices import rank_placement, shard_placement
from pathotune_cli.training.distributed import collective_device


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)


@pytest.mark.parametrize(("visible", "local_rank", "expected"), [
    (1, 0, "cuda:0"), (1, 3, "cuda:0"),  # srun --gpus-per-task=1: each task sees only its own GPU, as cuda:0
    (4, 3, "cuda:3"),  # torchrun on a 4-GPU node: every rank sees all four
    (2, 3, "cuda:1"),  # 4 tasks sharing 2 visible GPUs
])
def test_each_rank_takes_a_gpu_it_can_see(monkeypatch: pytest.MonkeyPatch, visible: int, local_rank: int,
                                          expected: str) -> None:
    _gpus(monkeypatch, visible)
    assert rank_gpu(local_rank) == expected
    world = World(rank=local_rank, size=4, local_rank=local_rank, launcher="srun")
    assert rank_placement("auto", "auto", "auto", world).device == expected
    assert rank_placement("cuda", "bf16", "auto", world).device == expected
    assert shard_placement("auto", "auto", Shard(local_rank, 4, "RANK", local_rank=local_rank)).device == expected
    assert collective_device("cuda", local_rank) == expected


def test_a_gpu_named_by_index_and_the_cpu_stay_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 1)
    world = World(rank=1, size=2, local_rank=1, launcher="torchrun")
    assert rank_placement("cpu", "fp32", "auto", world).device == "cpu"
    assert collective_device("cpu", 1) == "cpu"
    assert collective_device("cuda:0", 1) == "cuda:0"


def test_a_worker_whose_gpu_fails_to_start_reports_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA start-up failure in a --devices worker is its one line to the parent, not a traceback."""
    from dataclasses import dataclass

    import torch

    from pathotune_cli.runs.per_slide import devices

    @dataclass(frozen=True)
    class Opts:
        device: str = "cuda:1"

    def broken(index: int) -> None:
        raise RuntimeError("CUDA error: invalid device ordinal\nCUDA kernel errors might be asynchronously reported")

    monkeypatch.setattr(torch.cuda, "set_device", broken)
    sent: list = []

    class Events:
        def put(self, item: object) -> None:
            sent.append(item)

    devices._work("predict", Opts(), Events(), 3, 0)
    assert sent == [("error", 3, (1, "internal error in the worker on cuda:1: RuntimeError: CUDA error: invalid "
                                     "device ordinal"))]

"""Backbones and inputs the model benchmarks share: ViT-S and ViT-B sized presets with random weights.

Random weights cost the same per image as pretrained ones, so speed figures need no download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIZES = {
    # name: (timm model, width)
    "vit_small": ("vit_small_patch16_224", 384),
    "vit_base": ("vit_base_patch16_224", 768),
    "vit_large": ("vit_large_patch16_224", 1024),
    "vit_tiny": ("vit_tiny_patch16_224", 192),
}


def preset(size: str, **overrides: Any):  # a BackbonePreset
    """A random-weight timm ViT preset of ``size`` at 224 px (``vit_tiny`` with 2 blocks for --quick)."""
    from pathotune_cli.config.schema import BackbonePreset

    model, width = SIZES[size]
    data: dict[str, Any] = dict(
        name=f"bench-{size.replace('_', '-')}-random",
        family="timm_vit",
        model=model,
        weights="random",
        width=width,
        input_size=224,
        patch_size=16,
        num_prefix_tokens=1,
        pool="token",
        text_encoder="hash",
        description=f"{model} with random weights (benchmark only)",
    )
    if size == "vit_tiny":
        data["model_kwargs"] = {"depth": 2}
    data.update(overrides)
    return BackbonePreset(**data)


def task(tile_size: int = 224):  # a TaskPreset
    """The demo task (4 classes) with tiles of ``tile_size`` px at 0.5 µm/px."""
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.schema import TileSpec

    demo = load_task_preset("demo")
    return demo.model_copy(update={"tile": TileSpec(mpp=0.5, size=tile_size)})


def random_images(n: int, size: int = 224, seed: int = 0):  # a uint8 tensor
    """``n`` seeded uint8 (3, size, size) images."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)


def texture_images(n: int, size: int = 224, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` H&E-like uint8 (3, size, size) tiles and their demo class: crops and flips of a few textures."""
    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(seed)
    base = [(c, texture(c, size + 32, size + 32, rng)) for c in range(len(DEMO_CLASSES)) for _ in range(3)]
    out = np.empty((n, 3, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        cls, img = base[i % len(base)]
        x, y = rng.integers(0, 33, size=2)
        crop = img[y : y + size, x : x + size]
        crop = np.rot90(crop, int(rng.integers(0, 4)))
        out[i] = crop.transpose(2, 0, 1)
        labels[i] = cls
    return out, labels


class MemoryStore:
    """The ``ImageStore`` interface (``len`` and ``batch``) over tiles already in memory."""

    def __init__(self, images: Any) -> None:
        import torch

        self.images = torch.as_tensor(images)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: Any) -> Any:
        """uint8 (B, 3, S, S) tiles at ``index``."""
        import torch

        return self.images[torch.as_tensor(np.asarray(index), dtype=torch.long)]


def forward_rate(
    module: Any, images: Any, placement: Any, batch: int, repeats: int, warmup: int = 1, stat: str = "median"
) -> float:
    """Images per second of ``module(float images)`` under no_grad and the placement's autocast.

    ``images`` is a uint8 (B, 3, S, S) tensor of at least ``batch`` images; the same batch is run
    ``warmup`` times untimed, then ``repeats`` times, each timed; the rate comes from the median call
    (``stat="best"``: the fastest). The uint8 -> float conversion is outside the clock.
    """
    import statistics
    import time

    import torch

    x = images[:batch].float().div_(255.0).to(placement.device)
    if hasattr(module, "place"):  # a backbone or a prompted model: its kernels for this placement
        module.place(placement)
    module.eval()
    times = []
    with torch.no_grad(), placement.autocast():
        for _ in range(warmup):
            module(x)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return batch / (min(times) if stat == "best" else statistics.median(times))

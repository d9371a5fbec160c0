"""Controlled image shifts for ``eval --robustness``: stain, JPEG compression, focus and resolution, each at growing
strength, seeded so that a report is reproducible.

Each shift takes uint8 tiles (B, 3, H, W) and returns uint8 tiles of the same shape. The strengths are ours: the
mildest of each family is a change a lab meets between two scans of one slide, the strongest one between labs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pathotune_cli.training.augment import STAIN_DRAWS, stain_jitter


@dataclass(frozen=True)
class Shift:
    """One controlled shift: its family, its strength (as the family counts it) and its rank (1 = mildest)."""

    family: str
    strength: float
    rank: int

    @property
    def name(self) -> str:
        """``family=strength``, as the report's table and plot name it."""
        return f"{self.family}={self.strength:g}"


FAMILIES: dict[str, tuple[str, tuple[float, ...]]] = {
    "stain": ("HED jitter and stain-vector perturbation strength", (0.02, 0.05, 0.1, 0.2)),
    "jpeg": ("JPEG quality (lower is stronger)", (90, 70, 50, 30)),
    "blur": ("Gaussian blur sigma in pixels", (0.5, 1.0, 2.0)),
    "resolution": ("scale down then back up by this factor (lower is stronger)", (0.9, 0.75, 0.5)),
}
"""Each family's unit and strengths, mildest first (ours)."""


def all_shifts() -> list[Shift]:
    """Every shift of every family, mildest first within each family."""
    return [Shift(family, s, rank) for family, (_, levels) in FAMILIES.items()
            for rank, s in enumerate(levels, start=1)]


def apply_shift(shift: Shift, tiles: torch.Tensor, index: np.ndarray, seed: int = 0) -> torch.Tensor:
    """``tiles`` (uint8 B, 3, H, W) under ``shift``; ``index`` (the tiles' positions in the set) seeds the stain
    draws per tile, so a tile is shifted the same way whatever batch it comes in."""
    return _APPLY[shift.family](tiles, shift.strength, np.asarray(index), seed)


def _stain(tiles: torch.Tensor, strength: float, index: np.ndarray, seed: int) -> torch.Tensor:
    u = torch.stack([torch.rand(STAIN_DRAWS, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                     for i in index]) * 2 - 1
    out = stain_jitter(tiles.float() / 255, u, hed=strength, matrix=strength)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def _jpeg(tiles: torch.Tensor, quality: float, index: np.ndarray, seed: int) -> torch.Tensor:
    from PIL import Image

    def one(tile: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="JPEG", quality=int(quality))
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    return _per_tile(tiles, one)


def _blur(tiles: torch.Tensor, sigma: float, index: np.ndarray, seed: int) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    size = 2 * int(np.ceil(3 * sigma)) + 1
    out = gaussian_blur(tiles.float(), kernel_size=[size, size], sigma=[sigma, sigma])
    return out.round().clamp(0, 255).to(torch.uint8)


def _resolution(tiles: torch.Tensor, factor: float, index: np.ndarray, seed: int) -> torch.Tensor:
    h, w = tiles.shape[-2:]
    small = torch.nn.functional.interpolate(tiles.float(), size=(max(1, round(h * factor)), max(1, round(w * factor))),
                                            mode="bilinear", antialias=True, align_corners=False)
    back = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return back.round().clamp(0, 255).to(torch.uint8)


def _per_tile(tiles: torch.Tensor, one: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    arrays = tiles.permute(0, 2, 3, 1).contiguous().numpy()
    return torch.from_numpy(np.stack([one(t) for t in arrays])).permute(0, 3, 1, 2).contiguous()


_APPLY: dict[str, Callable[[torch.Tensor, float, np.ndarray, int], torch.Tensor]] = {
    "stain": _stain, "jpeg": _jpeg, "blur": _blur, "resolution": _resolution,
}

"""Tile grids at a physical resolution, with coordinates always in level-0 pixels.

A target resolution is a *target downsample* against level 0 (``target_mpp / level0_mpp``). Tiles are read
from the coarsest level still at least as fine as the target, at ``read_size`` pixels of that level, and
resized to ``tile_size``. The grid starts at (0, 0), steps by ``tile_size - overlap`` target pixels, and keeps
only tiles that lie wholly on the slide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A level up to 2% coarser than the target still counts as "as fine": pyramid sizes are rounded
# (a 0.2527 µm/px scan's 4x level is 1.0108 µm/px, which should serve a 1.0 µm/px target).
LEVEL_TOLERANCE = 0.02
# --mag without an objective power in the file: the usual convention that 20x is about 0.5 µm/px.
MICRONS_AT_1X = 10.0


@dataclass(frozen=True)
class TileGrid:
    """How tiles are cut from one slide."""

    level: int
    """Pyramid level the tiles are read from."""
    read_size: int
    """Tile side in pixels of ``level`` (resized to ``tile_size`` after reading)."""
    tile_size: int
    """Tile side in pixels at the target resolution."""
    overlap: int
    """Overlap between neighbouring tiles, in target pixels."""
    patch_size_level0: int
    """Tile side in level-0 pixels (the footprint on the slide)."""
    stride_level0: int
    """Step between neighbouring tiles in level-0 pixels."""
    level_downsample: float
    """Downsample of ``level`` against level 0."""
    target_downsample: float
    """Downsample of the target resolution against level 0."""


def target_downsample(
    level0_mpp: float,
    *,
    target_mpp: float | None = None,
    mag: float | None = None,
    objective_power: float | None = None,
) -> float:
    """Downsample against level 0 that gives ``target_mpp``, or magnification ``mag``.

    With ``mag``, the slide's objective power is used when the file states it (a 40x scan at ``mag=20``
    is a downsample of 2); otherwise ``mag`` is read as ``10 / mag`` µm/px (20x = 0.5 µm/px).
    """
    if (target_mpp is None) == (mag is None):
        raise ValueError("give exactly one of target_mpp and mag")
    if target_mpp is not None:
        return target_mpp / level0_mpp
    assert mag is not None
    if objective_power:
        return objective_power / mag
    return (MICRONS_AT_1X / mag) / level0_mpp


def choose_level(
    level_downsamples: Sequence[float], target_ds: float, tolerance: float = LEVEL_TOLERANCE
) -> int:
    """Coarsest level whose downsample is at most ``target_ds`` (within ``tolerance``); 0 if none is."""
    best = 0
    for level, ds in enumerate(level_downsamples):
        if ds <= target_ds * (1 + tolerance) and ds >= level_downsamples[best]:
            best = level
    return best


def make_grid(
    level_downsamples: Sequence[float], target_ds: float, tile_size: int, overlap: int = 0
) -> TileGrid:
    """The level, read size, footprint and stride of a grid at ``target_ds``.

    Args:
        level_downsamples: The slide's downsamples, level 0 first.
        target_ds: Target downsample against level 0 (``target_mpp / level0_mpp``).
        tile_size: Tile side at the target resolution, in pixels.
        overlap: Overlap in target pixels, ``0 <= overlap < tile_size``.
    """
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}")
    level = choose_level(level_downsamples, target_ds)
    ds = float(level_downsamples[level])
    return TileGrid(
        level=level,
        read_size=max(1, round(tile_size * target_ds / ds)),
        tile_size=tile_size,
        overlap=overlap,
        patch_size_level0=max(1, round(tile_size * target_ds)),
        stride_level0=max(1, round((tile_size - overlap) * target_ds)),
        level_downsample=ds,
        target_downsample=float(target_ds),
    )


def level_for_footprint(
    level_downsamples: Sequence[float], patch_size_level0: int, tile_size: int
) -> tuple[int, int]:
    """Level and read size for tiles of a known level-0 footprint (coords from CLAM, TRIDENT or ``tile``).

    Returns:
        ``(level, read_size)``: read ``read_size`` pixels of ``level`` per tile, then resize to ``tile_size``.
    """
    grid = make_grid(level_downsamples, patch_size_level0 / tile_size, tile_size)
    return grid.level, grid.read_size


def grid_coords(level0_size: tuple[int, int], patch_size_level0: int, stride_level0: int) -> np.ndarray:
    """Top-left level-0 coordinates of every tile wholly on the slide, row by row.

    Returns:
        ``(N, 2)`` int64 array of x, y.
    """
    w0, h0 = level0_size
    xs = np.arange(0, w0 - patch_size_level0 + 1, stride_level0, dtype=np.int64)
    ys = np.arange(0, h0 - patch_size_level0 + 1, stride_level0, dtype=np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.column_stack((xx.ravel(), yy.ravel()))


def tissue_fractions(
    coords: np.ndarray, patch_size_level0: int, mask: np.ndarray, level0_size: tuple[int, int]
) -> np.ndarray:
    """Fraction of each tile's footprint that the mask calls tissue, from a summed-area table.

    Args:
        coords: ``(N, 2)`` level-0 top-left x, y.
        patch_size_level0: Tile side in level-0 pixels.
        mask: Bool mask ``(H, W)`` over the whole slide (e.g. a thumbnail's).
        level0_size: (width, height) of level 0.

    Returns:
        ``(N,)`` float32 fractions in [0, 1].
    """
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    h, w = mask.shape
    sx, sy = w / level0_size[0], h / level0_size[1]
    dtype = np.int32 if mask.size < 2**31 else np.int64  # int32 sums a 2,048 px mask in half the time
    table = np.zeros((h + 1, w + 1), dtype)
    np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1, out=table[1:, 1:])
    x0 = np.clip(np.round(coords[:, 0] * sx).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.round(coords[:, 1] * sy).astype(np.int64), 0, h - 1)
    x1 = np.clip(np.round((coords[:, 0] + patch_size_level0) * sx).astype(np.int64), x0 + 1, w)
    y1 = np.clip(np.round((coords[:, 1] + patch_size_level0) * sy).astype(np.int64), y0 + 1, h)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return (inside / ((x1 - x0) * (y1 - y0))).astype(np.float32)

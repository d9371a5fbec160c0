"""The one loop that runs a slide's tiles through a model: ``predict`` (both levels) and ``features`` share it.

Tiles are read in batches (``wsi.iter_tile_batches``, with the run's reading processes if any), tolerating tiles
that do not decode (``wsi.damage``: filled from a coarser level, or left out and dropped here), turned into
float 0-1 tensors on the model's device, and passed to ``step`` under the placement's autocast; a progress event
follows each batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.events import Reporter, TilesDone, TilesPlanned, ignore
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.per_slide.tiling import PlannedSlide

if TYPE_CHECKING:
    import torch

    from pathotune_cli.wsi.damage import TileDamage
    from pathotune_cli.wsi.tiles import TileReaderPool

Step = Callable[["torch.Tensor"], tuple[np.ndarray, ...]]
"""A batch of float 0-1 tiles (B, 3, S, S) on the model's device -> per-tile arrays, each (B, ...)."""


@dataclass(frozen=True)
class TileOutputs:
    """What ``step`` gave for the slide's tiles that decoded, and which those were."""

    values: tuple[np.ndarray, ...]
    """Each of ``step``'s outputs for the kept tiles, in order."""
    kept: np.ndarray
    """(N,) bool over the planned tiles: False where no level decoded the tile (dropped)."""
    filled: np.ndarray
    """(kept,) bool: read from a coarser level because its own level did not decode."""
    damage: TileDamage
    """The slide's damaged tiles (``count`` is its ``tiles_damaged``)."""

    def coords(self, planned: PlannedSlide) -> np.ndarray:
        """The level-0 corners of the kept tiles."""
        return planned.coords[self.kept]


def infer_tiles(planned: PlannedSlide, step: Step, empty: tuple[np.ndarray, ...], placement: Placement, *,
                batch_size: int, max_damaged: float | None, report: Reporter = ignore,
                pool: TileReaderPool | None = None) -> TileOutputs:
    """Run every tile of ``planned`` through ``step``.

    Args:
        planned: The slide's tiles.
        step: The model's work on one batch (called under ``torch.no_grad`` and the placement's autocast).
        empty: What ``step`` gives for no tiles (the shapes of a slide with no tissue).
        placement: Device and precision.
        batch_size: Tiles per batch.
        max_damaged: Share of damaged tiles that fails the slide (``wsi.damage``).
        report: Receives ``TilesPlanned`` and a ``TilesDone`` per batch.
        pool: Reading processes shared by the run's slides (None: read in this process).

    Raises:
        DamagedSlide: more than ``max_damaged`` of the slide's tiles do not decode.
    """
    import torch

    from pathotune_cli.wsi.damage import TileDamage
    from pathotune_cli.wsi.tiles import iter_tile_batches

    name = planned.path.name
    damage = TileDamage(name, total=len(planned), max_share=max_damaged)
    report(TilesPlanned(name, len(planned)))
    kept = np.ones(len(planned), bool)
    filled = np.zeros(len(planned), bool)
    parts: list[tuple[np.ndarray, ...]] = []
    if len(planned):
        batches = iter_tile_batches(planned.path, planned.coords, level=planned.level, read_size=planned.read_size,
                                    tile_size=planned.tile_size, batch_size=batch_size, backend=planned.backend,
                                    pool=pool, damage=damage)
        for batch in batches:
            done = slice(batch.start, batch.start + len(batch.tiles))
            keep = batch.kept
            kept[done] = keep
            if batch.filled is not None:
                filled[done] = batch.filled
            if keep.any():
                tiles = torch.from_numpy(np.ascontiguousarray(batch.tiles[keep])).permute(0, 3, 1, 2)
                with torch.no_grad(), placement.autocast():
                    parts.append(step(tiles.float().div_(255.0).to(placement.device)))
            report(TilesDone(name, batch.start + len(batch.tiles)))
    values = tuple(np.concatenate([p[i] for p in parts]) if parts else e for i, e in enumerate(empty))
    return TileOutputs(values, kept, filled[kept], damage)

"""A slide's tiles for a slide-level model (planned by ``per_slide.tiling``), read whole or by index.

``features``, slide-level ``tune``, ``eval`` and ``predict`` all go through here, so a slide gives the same
tiles, and so the same features, in every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.events import Reporter, ignore
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.per_slide.inference import TileOutputs, infer_tiles
from pathotune_cli.runs.per_slide.tiling import PlannedSlide

if TYPE_CHECKING:
    import torch

    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.engine.slide_model import SlideModel


def read_tiles(slide: PlannedSlide, index: np.ndarray | None = None) -> torch.Tensor:
    """uint8 tiles (n, 3, S, S) as a torch tensor, at ``index`` (None: every tile)."""
    import torch

    from pathotune_cli.wsi import open_slide, read_batch
    from pathotune_cli.wsi.damage import TileDamage

    coords = slide.coords if index is None else slide.coords[np.asarray(index, np.int64)]
    with open_slide(slide.path, slide.backend) as reader:  # damaged tiles filled or white: counted by the inference
        tiles = read_batch(reader, coords, slide.level, slide.read_size, slide.tile_size,
                           damage=TileDamage(slide.path.name, max_share=None))
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()


def slide_features(model: PromptedModel | SlideModel, slide: PlannedSlide, placement: Placement, batch_size: int = 64,
                   report: Reporter = ignore, max_damaged: float | None = 0.05) -> TileOutputs:
    """Features (kept, D) float32 of a slide's tiles from ``model.tile_features`` (``per_slide.inference``)."""

    def step(images: torch.Tensor) -> tuple[np.ndarray, ...]:
        return (model.tile_features(images).float().cpu().numpy(),)

    empty = (np.zeros((0, model.feature_dim), np.float32),)
    return infer_tiles(slide, step, empty, placement, batch_size=batch_size, max_damaged=max_damaged,
                       report=report)


class SlideTileBags:
    """``training.mil_loop.TileBags`` over planned slides: tiles read on demand, by index.

    Where every slide's tiles fit in ``max_bytes`` together (a small study, the demo) they are decoded once
    and kept; otherwise each step reads its sampled tiles from the slide again.
    """

    def __init__(self, slides: list[PlannedSlide], max_bytes: int = 1 << 30) -> None:
        self.slides = slides
        total = sum(len(s) * 3 * s.tile_size**2 for s in slides)
        self._kept: dict[int, torch.Tensor] | None = {} if total <= max_bytes else None

    def count(self, slide: int) -> int:
        """Tiles of one slide."""
        return len(self.slides[slide])

    def tiles(self, slide: int, index: np.ndarray) -> torch.Tensor:
        """uint8 tiles of one slide at ``index``."""
        import torch

        if self._kept is None:
            return read_tiles(self.slides[slide], index)
        if slide not in self._kept:
            self._kept[slide] = read_tiles(self.slides[slide])
        return self._kept[slide][torch.as_tensor(np.asarray(index, np.int64))]

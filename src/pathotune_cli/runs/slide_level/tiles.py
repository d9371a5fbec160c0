"""A slide's tiles for a slide-level model (planned by ``per_slide.tiling``), read whole or by index.

``features``, slide-level ``tune``, ``eval`` and ``predict`` all go through here, so a slide gives the same
tiles, and so the same features, in every command.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pathotune_cli.events import Reporter, TilesDone, TilesPlanned, ignore
from pathotune_cli.runs.per_slide.tiling import PlannedSlide


def read_tiles(slide: PlannedSlide, index: np.ndarray | None = None) -> Any:
    """uint8 tiles (n, 3, S, S) as a torch tensor, at ``index`` (None: every tile)."""
    import torch

    from pathotune_cli.wsi import open_slide, read_batch

    coords = slide.coords if index is None else slide.coords[np.asarray(index, np.int64)]
    with open_slide(slide.path, slide.backend) as reader:
        tiles = read_batch(reader, coords, slide.level, slide.read_size, slide.tile_size)
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()


def slide_features(model: Any, slide: PlannedSlide, placement: Any, batch_size: int = 64,
                   report: Reporter = ignore) -> np.ndarray:
    """Features (N, D) float32 of every tile of a slide from ``model.tile_features``, read in batches."""
    import torch

    from pathotune_cli.wsi import iter_tile_batches

    report(TilesPlanned(slide.path.name, len(slide)))
    out = np.zeros((len(slide), model.feature_dim), np.float32)
    if not len(slide):
        return out
    batches = iter_tile_batches(slide.path, slide.coords, level=slide.level, read_size=slide.read_size,
                                tile_size=slide.tile_size, batch_size=batch_size, backend=slide.backend)
    for batch in batches:
        images = torch.from_numpy(batch.tiles).permute(0, 3, 1, 2).float().div_(255.0).to(placement.device)
        with torch.no_grad(), placement.autocast():
            features = model.tile_features(images).float().cpu().numpy()
        out[batch.start : batch.start + len(features)] = features
        report(TilesDone(slide.path.name, batch.start + len(features)))
    return out


class SlideTileBags:
    """``training.mil_loop.TileBags`` over planned slides: tiles read on demand, by index.

    Where every slide's tiles fit in ``max_bytes`` together (a small study, the demo) they are decoded once
    and kept; otherwise each step reads its sampled tiles from the slide again.
    """

    def __init__(self, slides: list[PlannedSlide], max_bytes: int = 1 << 30) -> None:
        self.slides = slides
        total = sum(len(s) * 3 * s.tile_size**2 for s in slides)
        self._kept: dict[int, Any] | None = {} if total <= max_bytes else None

    def count(self, slide: int) -> int:
        """Tiles of one slide."""
        return len(self.slides[slide])

    def tiles(self, slide: int, index: np.ndarray) -> Any:
        """uint8 tiles of one slide at ``index``."""
        import torch

        if self._kept is None:
            return read_tiles(self.slides[slide], index)
        if slide not in self._kept:
            self._kept[slide] = read_tiles(self.slides[slide])
        return self._kept[slide][torch.as_tensor(np.asarray(index, np.int64))]

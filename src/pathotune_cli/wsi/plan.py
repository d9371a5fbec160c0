"""Plan one slide's tiles: mpp, level, read size, tissue mask and the kept coordinates.

``tile`` and ``predict`` both call ``plan_slide``, so a slide tiled on the fly by ``predict`` gets exactly the
tiles ``pathotune tile`` would write for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import pathotune_cli.wsi.grid as grid_mod
from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.mpp import mpp_disagreement, resolve_mpp
from pathotune_cli.wsi.reader import SlideReader
from pathotune_cli.wsi.tissue import TISSUE_MODES, Polygon

THUMBNAIL_SIZE = 2048  # long side of the thumbnail the tissue mask is computed on


@dataclass(frozen=True)
class SlidePlan:
    """Everything needed to cut, read, draw and record one slide's tiles."""

    path: Path
    """The slide file."""
    backend: str
    """Reader that opened it (``tifffile``, ``openslide`` or ``image``); workers reopen with the same."""
    level0_size: tuple[int, int]
    """(width, height) of level 0."""
    mpp: float
    """Microns per level-0 pixel."""
    mpp_source: str
    """``metadata``, ``csv`` or ``default``."""
    target_mpp: float
    """Microns per pixel of the tiles as yielded."""
    grid: grid_mod.TileGrid
    """Level, read size, footprint and stride."""
    coords: np.ndarray
    """``(N, 2)`` int64 level-0 top-left x, y of the kept tiles, row by row."""
    tissue_fraction: np.ndarray
    """``(N,)`` tissue fraction of each kept tile."""
    candidates: int
    """Tiles in the full grid before the tissue filter."""
    tissue_mode: str
    """``otsu``, ``none`` or ``geojson``."""
    mask: np.ndarray
    """Bool tissue mask over the whole slide, at thumbnail resolution."""
    thumbnail: np.ndarray
    """RGB uint8 thumbnail (long side ``THUMBNAIL_SIZE`` at most) the mask was computed on."""
    objective_power: float | None = None
    """Scanner objective from the metadata, if stated."""
    notes: tuple[str, ...] = ()
    """Warnings for the user about this slide (a slides CSV mpp that disagrees with the file's)."""

    @cached_property
    def polygons(self) -> list[Polygon]:
        """Tissue contours in level-0 pixels (the whole slide's frame for tissue mode ``none``).

        Traced on first use: ``tile`` draws and writes them while its tiles are saved; ``predict`` never needs them.
        """
        from pathotune_cli.wsi.tissue import mask_contours

        return mask_contours(self.mask, self.level0_size) if self.tissue_mode != "none" else [_frame(self.level0_size)]

    @property
    def level(self) -> int:
        """Level the tiles are read from."""
        return self.grid.level

    @property
    def read_size(self) -> int:
        """Pixels of ``level`` read per tile side."""
        return self.grid.read_size

    @property
    def tile_size(self) -> int:
        """Tile side as yielded, in pixels."""
        return self.grid.tile_size

    @property
    def tissue_area_mm2(self) -> float:
        """Area the tissue mask covers, in mm2."""
        w0, h0 = self.level0_size
        return float(self.mask.mean()) * w0 * h0 * (self.mpp / 1000.0) ** 2

    def h5_attrs(self) -> dict[str, Any]:
        """Attributes for ``coords_file.write_coords`` (CLAM and TRIDENT names included)."""
        return {
            "patch_size": self.grid.tile_size,
            "patch_size_level0": self.grid.patch_size_level0,
            "patch_level": self.grid.level,
            "read_size": self.grid.read_size,
            "level0_mpp": self.mpp,
            "target_mpp": self.target_mpp,
            "mpp_source": self.mpp_source,
            "overlap": self.grid.overlap,
            "level0_width": self.level0_size[0],
            "level0_height": self.level0_size[1],
            "stride_level0": self.grid.stride_level0,
            "level_downsample": self.grid.level_downsample,
            "level0_magnification": self.objective_power if self.objective_power else float("nan"),
            "target_magnification": (
                self.objective_power / self.grid.target_downsample if self.objective_power else float("nan")
            ),
            "tissue_mode": self.tissue_mode,
            "name": self.path.stem,
        }


def plan_slide(
    slide: str | Path | SlideReader,
    *,
    target_mpp: float | None = None,
    mag: float | None = None,
    tile_size: int = 224,
    overlap: int = 0,
    min_tissue: float = 0.25,
    tissue: str = "otsu",
    tissue_geojson: str | Path | None = None,
    mpp_override: float | None = None,
    default_mpp: float | None = None,
    backend: str = "auto",
    thumbnail_size: int = THUMBNAIL_SIZE,
) -> SlidePlan:
    """Plan the tiles of one slide at a physical resolution.

    Args:
        slide: A slide path or an open reader.
        target_mpp: Target microns per pixel (exactly one of ``target_mpp`` and ``mag``).
        mag: Target magnification (uses the slide's objective power; else 20x = 0.5 µm/px).
        tile_size: Tile side in target pixels.
        overlap: Overlap between neighbours in target pixels.
        min_tissue: Tissue fraction a tile needs to be kept (0 keeps every tile of the grid).
        tissue: ``otsu`` (detect on the thumbnail) or ``none`` (the whole slide).
        tissue_geojson: Polygons drawn in QuPath, used instead of detection (overrides ``tissue``).
        mpp_override: The slide's mpp from the slides CSV, if any (wins over the metadata).
        default_mpp: ``--default-mpp``, used when neither the metadata nor the CSV gives one.
        backend: Reader backend when ``slide`` is a path.
        thumbnail_size: Long side of the thumbnail the mask is computed on.

    Returns:
        The ``SlidePlan``.

    Raises:
        BadInput: The slide cannot be read, has no usable mpp, or is coarser than the target.
    """
    from pathotune_cli.wsi.open import open_slide

    if (target_mpp is None) == (mag is None):
        raise BadInput("give exactly one of a target mpp and a magnification", "use --mpp or --mag, not both")
    if tissue not in TISSUE_MODES:
        raise BadInput(f"unknown tissue mode {tissue!r}", f"use one of {', '.join(TISSUE_MODES)}")
    own = not isinstance(slide, SlideReader)
    reader = open_slide(slide, backend) if own else slide  # type: ignore[arg-type]
    try:
        name = reader.path.name
        mpp, source = resolve_mpp(name, reader.mpp, csv_mpp=mpp_override, default_mpp=default_mpp)
        disagreement = mpp_disagreement(name, mpp_override, reader.mpp)
        power = reader.objective_power
        target_ds = _target_downsample(name, mpp, target_mpp, mag, power)
        tile_grid = grid_mod.make_grid(reader.level_downsamples, target_ds, tile_size, overlap)
        thumb = reader.thumbnail(thumbnail_size)
        size0 = reader.dimensions
        mask, mode = _tissue(thumb, size0, mpp, tissue, tissue_geojson)
        candidates = grid_mod.grid_coords(size0, tile_grid.patch_size_level0, tile_grid.stride_level0)
        fractions = grid_mod.tissue_fractions(candidates, tile_grid.patch_size_level0, mask, size0)
        keep = fractions >= min_tissue if min_tissue > 0 else np.ones(len(candidates), bool)
        return SlidePlan(
            path=reader.path, backend=reader.backend, level0_size=size0, mpp=mpp, mpp_source=source,
            target_mpp=mpp * target_ds, grid=tile_grid, coords=candidates[keep], tissue_fraction=fractions[keep],
            candidates=len(candidates), tissue_mode=mode, mask=mask, thumbnail=thumb, objective_power=power,
            notes=(disagreement,) if disagreement else (),
        )
    finally:
        if own:
            reader.close()


def _target_downsample(name: str, mpp: float, target_mpp: float | None, mag: float | None,
                       power: float | None) -> float:
    """Level-0 pixels per target pixel; a target finer than the scan is refused."""
    target_ds = grid_mod.target_downsample(mpp, target_mpp=target_mpp, mag=mag, objective_power=power)
    if target_ds < 1 / (1 + grid_mod.LEVEL_TOLERANCE):
        raise BadInput(
            f"{name}: scanned at {mpp:.4g} µm/px, coarser than the target {mpp * target_ds:.4g} µm/px",
            f"tile at --mpp {mpp:.3g} or coarser, or check the slide's mpp",
        )
    return target_ds


def _tissue(thumb: np.ndarray, size0: tuple[int, int], mpp: float, tissue: str,
            geojson: str | Path | None) -> tuple[np.ndarray, str]:
    """The tissue mask at thumbnail resolution, and the mode that made it (``geojson``, ``none``, ``otsu``)."""
    import pathotune_cli.wsi.tissue as tissue_mod

    if geojson is not None:
        from pathotune_cli.wsi.geojson import read_polygons

        return tissue_mod.mask_from_polygons(read_polygons(geojson), size0, thumb.shape[:2]), "geojson"
    if tissue == "none":
        return tissue_mod.full_mask(thumb.shape[:2]), "none"
    return tissue_mod.tissue_mask(thumb, pixel_um=mpp * size0[0] / thumb.shape[1]), "otsu"


def _frame(size0: tuple[int, int]) -> Polygon:
    w, h = size0
    return [np.array([[0, 0], [w, 0], [w, h], [0, h], [0, 0]], np.float64)]

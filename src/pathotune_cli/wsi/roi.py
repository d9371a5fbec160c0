"""Regions of interest from QuPath: keep only the tiles inside annotated regions (``predict/features --roi``).

"Inside" means: at least ``min_cover`` of the tile's area (our default ``ROI_MIN_COVER`` = 0.5, the same share as
``--min-label-cover``) lies inside the union of the regions, all classes and unclassified ones alike, or only
those of ``--roi-class`` (matched by name, case and separators aside; a derived class ``Tumor: Positive`` counts
for ``Tumor``). So a tile counts once, and the areas a summary reports from the kept tiles are areas within the
regions, to half a tile at their borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.config.schema import normalise_class_name
from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.labels import check_inside_slide, cover_fraction
from pathotune_cli.wsi.qupath_objects import read_qupath_objects

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

ROI_MIN_COVER = 0.5


@dataclass(frozen=True)
class Roi:
    """The union of a slide's regions of interest and where it came from."""

    source: Path
    area: BaseGeometry
    regions: int
    """Regions merged into ``area``."""
    roi_class: str | None

    @property
    def area_px(self) -> float:
        """Level-0 square pixels inside the regions."""
        return float(self.area.area)


def read_roi(path: str | Path, level0_size: tuple[int, int] | None = None, roi_class: str | None = None) -> Roi:
    """The regions of interest of one slide, from a QuPath GeoJSON export.

    Args:
        path: The GeoJSON file.
        level0_size: The slide's (width, height): a region outside it is refused.
        roi_class: Keep only regions of this class (or a class derived from it); None keeps every region.

    Raises:
        BadInput: a bad file, a region outside the slide, or no region of ``roi_class`` (naming the classes found).
    """
    import shapely

    found = read_qupath_objects(path, option="--roi")
    if level0_size is not None:
        check_inside_slide(found, level0_size)
    objects = found.objects
    if roi_class is not None:
        want = normalise_class_name(roi_class)
        objects = [o for o in objects if o.names and (normalise_class_name(o.class_name) == want
                                                       or normalise_class_name(o.names[0]) == want)]
        if not objects:
            seen = sorted({o.class_name or "unclassified" for o in found.objects})
            raise BadInput(f"{found.path}: no region of class '{roi_class}' (it has {', '.join(seen)})",
                           "pass --roi-class with one of those, or leave it out to keep every region")
    return Roi(found.path, shapely.union_all([o.geometry for o in objects]), len(objects), roi_class)


def inside_roi(roi: Roi, coords: np.ndarray, footprint: int | tuple[int, int],
               min_cover: float = ROI_MIN_COVER) -> np.ndarray:
    """``(N,)`` bool: which tiles (level-0 top-left ``coords``, side ``footprint``) lie inside the regions.

    A tile is inside when at least ``min_cover`` of its area lies inside the union of the regions.
    """
    return cover_fraction(roi.area, coords, footprint) >= min_cover - 1e-9

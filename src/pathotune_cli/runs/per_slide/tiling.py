"""How every command that cuts a slide cuts it: one set of options, one planning function.

``tile``, ``predict`` (tile and slide level), ``features`` and slide-level ``tune`` and ``eval`` all plan a slide
through ``plan``, so ``--min-tissue``, ``--tissue``, ``--tissue-geojson``, ``--default-mpp``, a slides-CSV mpp and
``--coords`` mean the same thing in each, and a slide gives the same tiles, and so the same features, everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.runs.per_slide.inputs import check_tissue_geojson, geojson_for
from pathotune_cli.runs.per_slide.resume import file_digest
from pathotune_cli.runs.per_slide.rows import SlideInput
from pathotune_cli.wsi.plan import SlidePlan

SCALE_TOLERANCE = 0.05
"""Reused coordinates whose tiles' physical side differs from the model's by more than this share are refused."""


@dataclass(frozen=True)
class Tiling:
    """How slides are cut: the resolution and size of the tiles, the tissue rule, where mpp comes from."""

    mpp: float | None = 0.5
    """Target microns per pixel; None with ``mag``."""
    size: int = 224
    """Tile side at the target resolution, in pixels."""
    min_tissue: float = 0.25
    """Tissue share a tile needs to be kept."""
    tissue: str = "otsu"
    """``otsu`` or ``none``."""
    default_mpp: float | None = None
    """mpp for slides whose metadata and slides-CSV row give none."""
    backend: str = "auto"
    """Slide reader (``wsi.open_slide``)."""
    mag: float | None = None
    """Target magnification, instead of ``mpp`` (``tile`` only)."""
    overlap: int = 0
    """Overlap between neighbouring tiles, in target pixels."""
    tissue_geojson: Path | None = None
    """A QuPath GeoJSON of tissue polygons (one slide), or a folder of ``<stem>.geojson``."""
    coords: Path | None = None
    """A coords ``.h5`` (one slide) or a folder of ``<stem>.h5`` to reuse instead of cutting."""
    max_damaged: float = 0.05
    """Share of a slide's tiles that may fail to decode (filled from a coarser level or left out) before the
    slide fails (``wsi.damage``; our default, ``DEFAULT_MAX_DAMAGED``)."""
    roi: Path | None = None
    """Regions of interest (QuPath GeoJSON: one slide's file, a folder of ``<stem>.geojson``, or a CSV
    ``slide,labels``): only tiles with at least ``wsi.roi.ROI_MIN_COVER`` of their area inside are kept."""
    roi_class: str | None = None
    """Keep only the regions of this class (and the classes derived from it)."""

    def check(self, slides: Sequence[SlideInput]) -> None:
        """Read every slide's tissue GeoJSON and coords file up front: a bad one is refused before any slide is cut.

        Raises:
            BadInput: a missing, unreadable or empty side file.
        """
        check_tissue_geojson([s.path for s in slides], self.tissue_geojson)
        if self.roi is not None:
            from pathotune_cli.wsi.labels import labels_for_slides
            from pathotune_cli.wsi.roi import read_roi

            for file in dict.fromkeys(labels_for_slides([s.path for s in slides], self.roi, option="--roi").values()):
                if file is not None:
                    read_roi(file, None, self.roi_class)  # a bad file or an absent class, before any slide
        if self.coords is None:
            return
        if not Path(self.coords).exists():
            raise BadInput(f"--coords {self.coords} does not exist", "pass a coords .h5 or a folder of them")
        from pathotune_cli.wsi.coords_file import read_coords

        for path in dict.fromkeys(coords_file_for(self.coords, s.path) for s in slides):
            found = read_coords(path)
            size0, mpp0 = found.attrs.get("patch_size_level0"), found.attrs.get("level0_mpp")
            if self.mpp is not None and isinstance(size0, (int, float)) and isinstance(mpp0, (int, float)):
                _check_scale(path, float(size0) * float(mpp0), int(size0), found.attrs.get("target_mpp"),
                             self.size, self.mpp, "SLIDE")

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """Every setting of this slide's tiles, for its key (``per_slide.resume``)."""
        return {
            "target_mpp": self.mpp, "mag": self.mag, "tile_size": self.size, "overlap": self.overlap,
            "min_tissue": self.min_tissue, "tissue": self.tissue,
            "tissue_geojson": file_digest(geojson_for(slide.path, self.tissue_geojson)),
            "coords": file_digest(coords_file_for(self.coords, slide.path)), "csv_mpp": slide.mpp,
            "default_mpp": self.default_mpp, "reader": self.backend, "max_damaged": self.max_damaged,
            "roi": file_digest(self.roi_file(slide)), "roi_class": self.roi_class,
        }

    def roi_file(self, slide: SlideInput) -> Path | None:
        """The slide's regions of interest file (None: no ``--roi``, or none for this slide)."""
        if self.roi is None:
            return None
        from pathotune_cli.wsi.labels import labels_for_slides

        return labels_for_slides([slide.path], self.roi, option="--roi")[slide.path]


@dataclass(frozen=True)
class PlannedSlide:
    """Where a slide's tiles are and how to read them.

    The level and read size are the plan's, unless the coordinates were reused (``--coords``).
    """

    coords: np.ndarray
    """``(N, 2)`` level-0 top-left x, y."""
    level: int
    read_size: int
    footprint: int
    """Tile side in level-0 pixels."""
    plan: SlidePlan
    """The ``wsi.SlidePlan`` (thumbnail, mask, mpp, attributes for a coords or features file)."""
    coords_file: Path | None = None
    """The reused coords file, if any."""
    roi_mm2: float | None = None
    """The area of the slide's regions of interest (``--roi``), in mm²; None without."""

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def path(self) -> Path:
        """The slide file."""
        return self.plan.path

    @property
    def backend(self) -> str:
        """The reader that opened it."""
        return self.plan.backend

    @property
    def tile_size(self) -> int:
        """Tile side the model sees, in pixels."""
        return self.plan.tile_size


def plan(slide: SlideInput, tiling: Tiling) -> PlannedSlide:
    """Plan a slide's tiles (or take them from ``tiling.coords``, checked against the tiles' physical size).

    Raises:
        BadInput: the slide cannot be read, has no usable mpp, or the reused coordinates are of another scale.
    """
    from pathotune_cli.wsi.plan import plan_slide

    planned = plan_slide(
        slide.path, target_mpp=tiling.mpp, mag=tiling.mag, tile_size=tiling.size, overlap=tiling.overlap,
        min_tissue=tiling.min_tissue, tissue=tiling.tissue, tissue_geojson=geojson_for(slide.path,
                                                                                       tiling.tissue_geojson),
        mpp_override=slide.mpp, default_mpp=tiling.default_mpp, backend=tiling.backend,
    )
    file = coords_file_for(tiling.coords, slide.path)
    if file is None:
        found = PlannedSlide(planned.coords, planned.level, planned.read_size, planned.grid.patch_size_level0, planned)
    else:
        found = _reused(file, planned)
    roi = tiling.roi_file(slide)
    return found if roi is None else _inside(found, roi, tiling.roi_class)


def _inside(planned: PlannedSlide, file: Path, roi_class: str | None) -> PlannedSlide:
    """Only the tiles inside the slide's regions of interest, and the regions' area."""
    import dataclasses

    from pathotune_cli.wsi.roi import inside_roi, read_roi

    roi = read_roi(file, planned.plan.level0_size, roi_class)
    keep = inside_roi(roi, planned.coords, planned.footprint)
    return dataclasses.replace(planned, coords=planned.coords[keep],
                               roi_mm2=roi.area_px * (planned.plan.mpp / 1000.0) ** 2)


def coords_file_for(coords: Path | None, slide: Path) -> Path | None:
    """The coords ``.h5`` to reuse for a slide: the file given, or ``<stem>.h5`` in the folder given."""
    if coords is None:
        return None
    if Path(coords).is_file():
        return Path(coords)
    candidate = Path(coords) / f"{slide.stem}.h5"
    if not candidate.is_file():
        raise BadInput(f"no coords file {candidate} for {slide.name}", "run `pathotune tile` on it, or drop --coords")
    return candidate


def _reused(file: Path, planned: SlidePlan) -> PlannedSlide:
    """The slide's tiles at the coordinates of ``file``, read at the planned tiles' scale."""
    from pathotune_cli.wsi.coords_file import read_coords
    from pathotune_cli.wsi.grid import level_for_footprint
    from pathotune_cli.wsi.open import open_slide

    found = read_coords(file)
    with open_slide(planned.path, planned.backend) as reader:
        downsamples = reader.level_downsamples
    footprint = found.footprint(downsamples)
    _check_scale(file, footprint * planned.mpp, footprint, found.attrs.get("target_mpp"), planned.tile_size,
                 planned.target_mpp, planned.path.name)
    level, read_size = level_for_footprint(downsamples, footprint, planned.tile_size)
    return PlannedSlide(found.coords, level, read_size, footprint, planned, file)


def _check_scale(file: Path, side: float, footprint: int, cut: object, size: int, mpp: float, slide: str) -> None:
    """Refuse coordinates whose tiles cover another physical side (µm) than the model's tiles.

    Raises:
        BadInput: naming both scales and the ``tile`` command that cuts the right ones.
    """
    wanted = size * mpp
    if abs(side - wanted) <= SCALE_TOLERANCE * wanted:
        return
    how = f"cut at {float(cut):g} µm/px, " if isinstance(cut, (int, float)) else ""
    raise BadInput(
        f"--coords {file.name} holds tiles of {side:.0f} µm ({how}{footprint} px at level 0); "
        f"this model reads tiles of {wanted:.0f} µm ({size} px at {mpp:g} µm/px)",
        f"cut coordinates for this model with `pathotune tile {slide} --mpp {mpp:g} --tile-size {size}`, "
        "or drop --coords",
    )

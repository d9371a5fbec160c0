"""Zeiss CZI slides through pylibCZIrw (libCZI): JPEG-XR, zstd and raw subblocks, scenes, pyramid subblocks.

A CZI stores a mosaic of subblocks, each at a pyramid zoom (1 for full resolution, 1/2, 1/4, ... for the
pyramid the scanner wrote). The levels here are the file's own pyramid: one per zoom its subblocks carry.
Reading a level asks libCZI for the level-0 rectangle at that zoom, so it composes the mosaic from the
subblocks of that pyramid layer. mpp comes from ``Metadata/Scaling/Items/Distance[@Id='X']/Value`` (metres).
Everything outside the scenes is white. Fluorescence (grey or multi-channel) CZI files are refused with the
reason: the models take RGB brightfield.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, MissingDependency, first_line
from pathotune_cli.wsi.reader import DamagedSlide, DamagedTile, SlideReader

INSTALL = "pip install pylibCZIrw"
MAGIC = b"ZISRAWFILE"
"""The first bytes of every CZI file (its file header segment id)."""
_RGB_TYPES = frozenset({"Bgr24", "Bgr48", "Bgra32"})
_WHITE = (1.0, 1.0, 1.0)  # libCZI's background colour, 0-1 per channel


class CziSlideReader(SlideReader):
    """A Zeiss CZI slide, read through pylibCZIrw."""

    backend = "czi"

    def __init__(self, path: str | Path) -> None:
        """Open ``path``; raises BadInput when it is not an RGB CZI this reader handles."""
        pyczi = import_pylibczirw()
        super().__init__(path)
        try:
            self._context = pyczi.open_czi(str(self.path))
            self._czi: Any = self._context.__enter__()
        except Exception as exc:  # libCZI raises RuntimeError and others for a damaged file
            raise DamagedSlide(
                f"{self.path.name}: libCZI cannot read it ({first_line(exc)})",
                "the file may be damaged or truncated; copy it again",
            ) from exc
        try:
            self._check_rgb()
            rect = self._czi.total_bounding_rectangle
            self._origin = (int(rect.x), int(rect.y))
            self._dims = _level_dimensions((int(rect.w), int(rect.h)), _pyramid_zooms(self._czi))
            self._metadata: dict[str, Any] = self._czi.metadata or {}
        except BaseException:
            self.close()
            raise

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every pyramid layer the file holds, level 0 first."""
        return self._dims

    @property
    def mpp(self) -> float | None:
        """``Scaling/Items/Distance[X]/Value`` in metres, as microns; None when absent."""
        from pathotune_cli.wsi.mpp import to_microns

        for item in _as_list(_dig(self._metadata, "ImageDocument", "Metadata", "Scaling", "Items", "Distance")):
            if isinstance(item, dict) and item.get("@Id") == "X":
                return to_microns(item.get("Value"), "m")
        return None

    @property
    def mpp_source(self) -> str | None:
        """``czi-scaling`` when the file states its scaling."""
        return "czi-scaling" if self.mpp is not None else None

    @property
    def objective_power(self) -> float | None:
        """The first objective's ``NominalMagnification``, or None."""
        objectives = _dig(self._metadata, "ImageDocument", "Metadata", "Information", "Instrument", "Objectives")
        for objective in _as_list(objectives.get("Objective") if isinstance(objectives, dict) else None):
            try:
                value = float(objective.get("NominalMagnification"))
            except (AttributeError, TypeError, ValueError):
                continue
            if value > 0:
                return value
        return None

    @property
    def properties(self) -> dict[str, str]:
        """A few CZI facts, for display."""
        return {"czi.pixel_types": ",".join(sorted(set(self._czi.pixel_types.values()))),
                "czi.bounding_rectangle": f"{self._origin} {self.dimensions}"}

    def close(self) -> None:
        """Close the file."""
        context = getattr(self, "_context", None)
        if context is not None:
            self._context = None
            context.__exit__(None, None, None)

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        roi = (self._origin[0] + round(x * ds), self._origin[1] + round(y * ds), round(w * ds), round(h * ds))
        try:
            bgr = self._czi.read(roi=roi, plane={"C": 0, "T": 0, "Z": 0}, zoom=1.0 / ds, pixel_type="Bgr24",
                                 background_pixel=_WHITE)
        except Exception as exc:  # a subblock that does not decode
            raise DamagedTile(
                f"{self.path.name}: a region of level {level} cannot be decoded ({first_line(exc)})",
                "the file is damaged; copy it again from the scanner",
            ) from exc
        rgb = np.ascontiguousarray(np.asarray(bgr)[..., 2::-1])
        if rgb.shape[:2] != (h, w):  # libCZI rounds a zoomed size its own way: at most a pixel off
            from PIL import Image

            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        return rgb

    def _check_rgb(self) -> None:
        types = self._czi.pixel_types
        channels = self._czi.total_bounding_box.get("C", (0, 1))
        if channels[1] - channels[0] > 1 or not set(types.values()) <= _RGB_TYPES:
            raise BadInput(
                f"{self.path.name}: a CZI with {channels[1] - channels[0]} channel(s) of "
                f"{', '.join(sorted(set(types.values())))}, not RGB brightfield",
                "tile RGB (brightfield H&E) scans; export fluorescence channels as an RGB image first",
            )


def import_pylibczirw() -> Any:
    """Import pylibCZIrw's reader, or say which ``pip install`` adds it."""
    try:
        from pylibCZIrw import czi as pyczi
    except ImportError as exc:
        raise MissingDependency(f"reading CZI needs pylibCZIrw, which is not installed ({first_line(exc)})",
                                INSTALL) from exc
    return pyczi


def is_czi(path: Path) -> bool:
    """Whether ``path`` starts with the CZI file header."""
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def _pyramid_zooms(czi: Any) -> list[float]:
    """The distinct zooms of the file's subblocks (1.0 first): its pyramid layers."""
    zooms: set[float] = set()

    def visit(_index: int, info: Any) -> bool:
        zooms.add(round(float(info.get_zoom()), 3))
        return True

    czi.enumerate_subblocks(visit)
    return sorted((z for z in zooms if 0 < z <= 1.0), reverse=True) or [1.0]


def _level_dimensions(size0: tuple[int, int], zooms: list[float]) -> tuple[tuple[int, int], ...]:
    """Level 0 and one level per distinct whole downsample of the pyramid's zooms (edge subblocks vary a bit)."""
    w0, h0 = size0
    downsamples = sorted({round(1 / zoom) for zoom in zooms} - {0, 1})
    return ((w0, h0), *((w0 // ds, h0 // ds) for ds in downsamples if w0 // ds >= 1 and h0 // ds >= 1))


def _dig(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree if tree is not None else {}


def _as_list(value: Any) -> list[Any]:
    if value is None or value == {}:
        return []
    return value if isinstance(value, list) else [value]

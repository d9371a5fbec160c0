"""The report's pictures as data URIs: records re-encoded small, and map overlays drawn from the tile CSVs.

Colours read by colour-blind readers: classes take the Okabe-Ito palette, continuous values (probability,
attention) the viridis-like ramp of ``wsi.thumbnail``, out-of-distribution tiles black.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OKABE_ITO: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167),
    (0, 0, 0),
)
"""Okabe & Ito (2008): eight colours told apart with every common colour-vision deficiency."""
OOD_COLOUR = (0, 0, 0)
JPEG_QUALITY = 70
"""A 640 px thumbnail of tissue edge to edge is about 50 KB (68 KB inline); 100 of them fit a few MB."""
VIEW_SIZE = 640
"""Long side of a slide picture in the report (the zoom magnifies this; the records hold no more detail)."""



@dataclass(frozen=True)
class Placement:
    """Where a map image lies over the thumbnail, in percent of the slide's level-0 width and height."""

    left: float
    top: float
    width: float
    height: float

    def style(self) -> str:
        """The CSS that puts the image there."""
        return (f"left:{self.left:.4f}%;top:{self.top:.4f}%;width:{self.width:.4f}%;height:{self.height:.4f}%")


@dataclass(frozen=True)
class Overlay:
    """One switchable map over a slide's thumbnail: one pixel per tile, scaled up by the browser."""

    key: str
    label: str
    uri: str
    legend: list[tuple[str, str]]
    """(text, CSS colour) entries; a ramp legend lists its stops."""
    unit: str
    place: Placement


@dataclass(frozen=True)
class TileGridCells:
    """Tiles as cells of a regular grid over level 0: the map has one pixel per cell."""

    x0: int
    y0: int
    stride: int
    cols: int
    rows: int
    ix: np.ndarray
    iy: np.ndarray

    def placement(self, level0_size: tuple[int, int]) -> Placement:
        """The grid's extent over the slide."""
        w0, h0 = level0_size
        return Placement(100 * self.x0 / w0, 100 * self.y0 / h0, 100 * self.cols * self.stride / w0,
                         100 * self.rows * self.stride / h0)


RAMP_STEPS = 20
"""Continuous values are drawn in steps of 1/20 (0.05): finer than the eye reads a colour ramp."""
MAX_CELLS = 4_000_000
"""Above this many grid cells (tiles at odd offsets), tiles snap to a grid of their own size instead."""


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of class ``index`` (the palette repeats past eight classes)."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def css(rgb: tuple[int, ...]) -> str:
    """``rgb(r g b)`` for a CSS colour."""
    return f"rgb({rgb[0]} {rgb[1]} {rgb[2]})"


def picture_uri(path: Path, max_side: int = VIEW_SIZE, photo: bool = True) -> tuple[str, tuple[int, int]]:
    """(data URI, (width, height)) of an image record, scaled to ``max_side`` at most.

    ``photo``: JPEG (thumbnails, maps over tissue); else PNG (charts with thin lines and text).
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if max(img.size) > max_side:
            factor = max_side / max(img.size)
            img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.BOX)
        return encode(img, photo), img.size


def encode(img: object, photo: bool, optimize: bool = True) -> str:
    """A PIL image as a data URI (JPEG quality 70, or PNG)."""
    buffer = io.BytesIO()
    if photo:
        img.save(buffer, format="JPEG", quality=JPEG_QUALITY)  # type: ignore[attr-defined]
        kind = "jpeg"
    else:
        img.save(buffer, format="PNG", optimize=optimize)  # type: ignore[attr-defined]
        kind = "png"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def overlays(columns: dict[str, np.ndarray], classes: list[str], level0_size: tuple[int, int]) -> list[Overlay]:
    """The maps a slide's tile CSV allows, placed over a slide of ``level0_size``.

    Args:
        columns: Tile CSV columns as arrays: ``x``, ``y``, ``w`` (level 0); the ``prob_<class>`` matrix as
            ``probs``; ``ood`` (0/1) and ``attention`` where present.
        classes: Class names, in the order of the ``probs`` columns.
        level0_size: The slide's level-0 (width, height).
    """
    if not len(columns.get("x", ())):
        return []
    cells = tile_cells(columns)
    place = cells.placement(level0_size)
    found: list[Overlay] = []
    probs = columns.get("probs")
    if probs is not None and len(classes) > 1:
        fills = np.array([class_colour(i) for i in range(len(classes))], np.uint8)[probs.argmax(axis=1)]
        found.append(Overlay("class", "most probable class", _draw(cells, fills),
                             [(c, css(class_colour(i))) for i, c in enumerate(classes)], "class of each tile", place))
        found.append(_ramp_overlay("confidence", "top probability", cells, probs.max(axis=1),
                                   "probability of the most probable class, 0-1", place))
    if "attention" in columns:
        att = columns["attention"]
        scaled = att / att.max() if att.max() > 0 else att
        found.append(_ramp_overlay("attention", "attention", cells, scaled,
                                   "attention, scaled to the slide's most attended tile (0-1, no unit)", place))
    if "ood" in columns:
        flagged = columns["ood"] > 0
        fills = np.zeros((len(flagged), 4), np.uint8)
        fills[flagged] = (*OOD_COLOUR, 255)
        found.append(Overlay("ood", "out of distribution", _draw(cells, fills), [("flagged tile", css(OOD_COLOUR))],
                             "tiles unlike the training tiles", place))
    return found


def tile_cells(columns: dict[str, np.ndarray]) -> TileGridCells:
    """The grid the tiles lie on: its step is the smallest gap between tile positions (at most a tile's side)."""
    x, y = columns["x"].astype(np.int64), columns["y"].astype(np.int64)
    side = int(np.median(columns["w"])) if len(columns["w"]) else 1
    gaps = [np.diff(np.unique(v)) for v in (x, y)]
    gaps = [g[g > 0] for g in gaps]
    stride = max(1, min([side, *(int(g.min()) for g in gaps if len(g))]))
    x0, y0 = int(x.min()), int(y.min())
    if ((x.max() - x0) // stride + 1) * ((y.max() - y0) // stride + 1) > MAX_CELLS:
        stride = max(1, side)
    ix, iy = (x - x0 + stride // 2) // stride, (y - y0 + stride // 2) // stride
    return TileGridCells(x0, y0, stride, int(ix.max()) + 1, int(iy.max()) + 1, ix, iy)


def _ramp_overlay(key: str, label: str, cells: TileGridCells, values: np.ndarray, unit: str,
                  place: Placement) -> Overlay:
    from pathotune_cli.wsi.thumbnail import ramp

    stops = [(f"{v:.2f}", css(tuple(int(c) for c in ramp(np.array(v))))) for v in (1.0, 0.75, 0.5, 0.25, 0.0)]
    steps = np.round(np.asarray(values, np.float64) * RAMP_STEPS) / RAMP_STEPS  # few colours: a small PNG
    return Overlay(key, label, _draw(cells, ramp(steps)), stops, unit, place)


def _draw(cells: TileGridCells, fills: np.ndarray) -> str:
    """A transparent PNG, one pixel per grid cell, each tile's cell filled (RGB opaque; RGBA as given)."""
    from PIL import Image

    fills = np.asarray(fills, np.uint8)
    if fills.ndim == 2 and fills.shape[1] == 3:
        fills = np.concatenate([fills, np.full((len(fills), 1), 255, np.uint8)], axis=1)
    canvas = np.zeros((cells.rows, cells.cols, 4), np.uint8)
    canvas[cells.iy, cells.ix] = fills
    return encode(Image.fromarray(canvas, "RGBA"), photo=False, optimize=False)

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
VIEW_SIZE = 768
"""Long side of a slide picture in the report (the zoom magnifies this; the records hold no more detail)."""


@dataclass(frozen=True)
class Overlay:
    """One switchable map over a slide's thumbnail."""

    key: str
    label: str
    uri: str
    legend: list[tuple[str, str]]
    """(text, CSS colour) entries; a ramp legend lists its stops."""
    unit: str


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


def encode(img: object, photo: bool) -> str:
    """A PIL image as a data URI (JPEG quality 80, or optimised PNG)."""
    buffer = io.BytesIO()
    if photo:
        img.save(buffer, format="JPEG", quality=80)  # type: ignore[attr-defined]
        kind = "jpeg"
    else:
        img.save(buffer, format="PNG", optimize=True)  # type: ignore[attr-defined]
        kind = "png"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def overlays(columns: dict[str, np.ndarray], classes: list[str], level0_size: tuple[int, int],
             size: tuple[int, int]) -> list[Overlay]:
    """The maps a slide's tile CSV allows, drawn at ``size`` over a slide of ``level0_size``.

    Args:
        columns: Tile CSV columns as arrays: ``x``, ``y``, ``w``, ``h`` (level 0) and ``class`` (index), the
            ``prob_<class>`` matrix as ``probs``, ``ood`` (0/1) and ``attention`` where present.
        classes: Class names, in the order of the class indices.
        level0_size: The slide's level-0 (width, height).
        size: The thumbnail's (width, height) in the report.
    """
    scale = size[0] / level0_size[0]
    boxes = _boxes(columns, scale, size)
    found: list[Overlay] = []
    if "class" in columns:
        fills = np.array([class_colour(i) for i in range(len(classes))], np.uint8)[columns["class"]]
        found.append(Overlay("class", "most probable class", _draw(boxes, fills, size),
                             [(c, css(class_colour(i))) for i, c in enumerate(classes)], "class of each tile"))
    if "probs" in columns and len(classes) > 1:
        found.append(_ramp_overlay("confidence", "top probability", boxes, columns["probs"].max(axis=1), size,
                                   "probability of the most probable class, 0-1"))
    if "attention" in columns:
        att = columns["attention"]
        scaled = att / att.max() if len(att) and att.max() > 0 else att
        found.append(_ramp_overlay("attention", "attention", boxes, scaled, size,
                                   "attention, scaled to the slide's most attended tile (0-1, no unit)"))
    if "ood" in columns:
        flagged = columns["ood"] > 0
        fills = np.zeros((len(flagged), 4), np.uint8)
        fills[flagged] = (*OOD_COLOUR, 255)
        found.append(Overlay("ood", "out of distribution", _draw(boxes, fills, size),
                             [("flagged tile", css(OOD_COLOUR))], "tiles unlike the training tiles"))
    return found


def _ramp_overlay(key: str, label: str, boxes: np.ndarray, values: np.ndarray, size: tuple[int, int],
                  unit: str) -> Overlay:
    from pathotune_cli.wsi.thumbnail import ramp

    stops = [(f"{v:.2f}", css(tuple(int(c) for c in ramp(np.array(v))))) for v in (1.0, 0.75, 0.5, 0.25, 0.0)]
    return Overlay(key, label, _draw(boxes, ramp(values), size), stops, unit)


def _boxes(columns: dict[str, np.ndarray], scale: float, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) integer pixel boxes x0, y0, x1, y1 on the picture, at least one pixel each."""
    x0 = np.floor(columns["x"] * scale)
    y0 = np.floor(columns["y"] * scale)
    x1 = np.maximum(np.ceil((columns["x"] + columns["w"]) * scale), x0 + 1)
    y1 = np.maximum(np.ceil((columns["y"] + columns["h"]) * scale), y0 + 1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size[0])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size[1])
    return boxes


def _draw(boxes: np.ndarray, fills: np.ndarray, size: tuple[int, int]) -> str:
    """A transparent PNG with each box filled (RGB fills opaque; RGBA fills as given)."""
    from PIL import Image

    canvas = np.zeros((size[1], size[0], 4), np.uint8)
    fills = np.asarray(fills, np.uint8)
    if fills.ndim == 2 and fills.shape[1] == 3:
        fills = np.concatenate([fills, np.full((len(fills), 1), 255, np.uint8)], axis=1)
    for (x0, y0, x1, y1), fill in zip(boxes.tolist(), fills, strict=True):
        canvas[y0:y1, x0:x1] = fill
    return encode(Image.fromarray(canvas, "RGBA"), photo=False)

"""Where the tissue is, found once per slide on its thumbnail.

Otsu's threshold on saturation, with pixels that are near-black (black borders, black ink, transparent
regions read as black) or pen-coloured (green, cyan, blue ink) set aside before the threshold is chosen.
Saturation is ``(max - min) / max(max, 128)`` of R, G, B: HSV saturation for bright pixels, with the value
floored at one half so the noise of a black border never looks saturated. Morphology then closes gaps and
small holes and drops specks. The mask can also come from polygons drawn in QuPath (``mask_from_polygons``)
or be the whole slide (mode ``none``). Contours come back as level-0 polygons.

Why these choices (measured on CMU-1-Small-Region as RGB-JPEG SVS and as a re-encoded YCbCr-JPEG pyramid):
re-encoding lowers chroma by 4-7 %, and a separate fill-holes step or a pre-threshold blur turned that into
whole tiles crossing the tissue threshold; closing alone, on this saturation, gave the same tiles from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

TissueMode = Literal["otsu", "none"]
TISSUE_MODES: tuple[str, ...] = ("otsu", "none")

# A polygon is a list of rings (exterior first, then holes), each an (K, 2) float array of level-0 x, y.
Polygon = list[np.ndarray]

# Saturation (0-255) bounds for Otsu's choice: below the floor is glass noise, above the cap splits tissue.
SATURATION_FLOOR = 12.0
SATURATION_CAP = 40.0  # Otsu between glass and dark nuclei lands high; pale tissue (fat, loose stroma) sits at 15-40
VALUE_FLOOR = 128  # saturation divides by max(R, G, B) floored here, so dark noise is not "saturated"
DARK_MAX = 35  # max(R, G, B) below this is black border, black ink or a transparent region
MIN_OBJECT_UM2 = 10_000.0  # specks smaller than ~100 x 100 µm are dust or debris
CLOSING_FRACTION = 0.003  # closing square side, as a fraction of the thumbnail's long side (each way)


def tissue_mask(
    rgb: np.ndarray,
    *,
    pixel_um: float | None = None,
    min_object_um2: float = MIN_OBJECT_UM2,
) -> np.ndarray:
    """Tissue mask of a thumbnail: True where there is tissue.

    Args:
        rgb: Thumbnail, ``(H, W, 3)`` uint8 (``(H, W, 4)`` is composited onto white first).
        pixel_um: Microns per thumbnail pixel, to size specks physically; None sizes them as 1e-4 of the
            thumbnail's area instead.
        min_object_um2: Connected tissue smaller than this is dropped.

    Returns:
        A bool array of shape ``(H, W)``.
    """
    from scipy import ndimage

    from pathotune_cli.wsi.reader import rgba_to_rgb

    rgb = rgba_to_rgb(np.asarray(rgb))
    hi, lo = _hi_lo(rgb)
    saturation = _saturation(hi, lo)
    usable = (hi >= DARK_MAX) & ~_pen(rgb, hi, lo)
    if not usable.any():
        return np.zeros(rgb.shape[:2], bool)
    threshold = float(np.clip(otsu_threshold(saturation[usable]), SATURATION_FLOOR, SATURATION_CAP))
    mask = (saturation > threshold) & usable
    size = 2 * max(1, round(CLOSING_FRACTION * max(mask.shape))) + 1
    mask = ndimage.minimum_filter(ndimage.maximum_filter(mask, size, mode="nearest"), size, mode="nearest")
    min_object = min_object_um2 / pixel_um**2 if pixel_um else 1e-4 * mask.size
    return _drop_small_objects(mask, min_object)


def saturation_of(rgb: np.ndarray) -> np.ndarray:
    """Saturation in 0-255: ``255 * (max - min) / max(max, VALUE_FLOOR)`` over R, G, B."""
    return _saturation(*_hi_lo(rgb))


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels in green, cyan or blue ink: hue 70-245 degrees with clear colour (chroma >= 40).

    Haematoxylin sits at about 250-300 degrees and eosin at 300-360, so stained tissue is kept; red ink
    cannot be told from eosin by colour alone and is not removed.
    """
    return _pen(rgb, *_hi_lo(rgb))


def _saturation(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return (hi - lo).astype(np.float32) * (255.0 / np.maximum(hi, VALUE_FLOOR).astype(np.float32))


def _pen(rgb: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``pen_mask`` in integer arithmetic: the hue test as inequalities on the channels, no division.

    The hue of a pixel whose largest channel is red lies in 300-60 degrees, never in the ink range. Green
    largest: hue = 120 + 60 (b - r) / chroma, which is >= 70 when 6 (b - r) >= -5 chroma. Blue largest:
    hue = 240 + 60 (r - g) / chroma, which is < 245 when 12 (r - g) < chroma. Ties go to red, then green,
    as the usual hue formula breaks them. Four times faster than computing the hue in floats on a
    2,048 px thumbnail (benchmarks, issue 6).
    """
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    chroma = hi - lo
    red_top = r == hi
    green_top = ~red_top & (g == hi)
    blue_top = ~(red_top | green_top)
    pen = green_top & (6 * (b - r) >= -5 * chroma)
    pen |= blue_top & (12 * (r - g) < chroma)
    pen &= chroma >= 40
    return pen


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample: the cut that maximises the between-class variance."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def full_mask(shape: tuple[int, int]) -> np.ndarray:
    """Tissue mode ``none``: every pixel counts as tissue."""
    return np.ones(shape, bool)


def mask_from_polygons(
    polygons: Sequence[Polygon], level0_size: tuple[int, int], mask_shape: tuple[int, int]
) -> np.ndarray:
    """Rasterise level-0 polygons (exterior filled, holes cleared) onto a mask of ``mask_shape`` (H, W)."""
    from PIL import Image, ImageDraw

    h, w = mask_shape
    sx, sy = w / level0_size[0], h / level0_size[1]
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        for i, ring in enumerate(polygon):
            if len(ring) >= 3:
                points = [(float(x) * sx, float(y) * sy) for x, y in ring]
                draw.polygon(points, fill=0 if i else 1)
    return np.asarray(canvas, bool)


def mask_contours(
    mask: np.ndarray, level0_size: tuple[int, int], *, simplify_px: float = 1.0, min_hole_px: float = 25.0
) -> list[Polygon]:
    """Outline a mask as level-0 polygons (exterior ring first, then holes), simplified to ``simplify_px``.

    Args:
        mask: Bool mask of shape ``(H, W)`` covering the whole slide.
        level0_size: (width, height) of level 0.
        simplify_px: Douglas-Peucker tolerance in mask pixels.
        min_hole_px: Holes smaller than this many mask pixels are left out of the outline.
    """
    import contourpy

    if not mask.any():
        return []
    h, w = mask.shape
    padded = np.pad(mask.astype(np.float32), 1)
    gen = contourpy.contour_generator(z=padded, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = gen.filled(0.5, 1.5)
    sx, sy = level0_size[0] / w, level0_size[1] / h
    polygons: list[Polygon] = []
    for points, offsets in zip(points_list, offsets_list, strict=True):
        rings = []
        for k, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            ring = simplify(points[start:stop], simplify_px)
            if k and _area(ring) < min_hole_px:
                continue
            if len(ring) >= 4:
                # padded index -> mask pixel edge coordinates -> level-0 pixels
                rings.append(np.column_stack(((ring[:, 0] - 0.5) * sx, (ring[:, 1] - 0.5) * sy)))
        if rings:
            polygons.append(rings)
    return polygons


def simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of a closed ring (first point repeated last), keeping it closed."""
    ring = np.asarray(ring, np.float64)
    if len(ring) <= 4 or tolerance <= 0:
        return ring
    keep = np.zeros(len(ring), bool)
    keep[0] = keep[-1] = True
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))  # split the closed ring at its farthest point
    keep[far] = True
    stack = [(0, far), (far, len(ring) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        seg = ring[b] - ring[a]
        rel = ring[a + 1 : b] - ring[a]
        norm = float(np.hypot(*seg))
        dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm if norm else np.hypot(*rel.T)
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
    return ring[keep]


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _hi_lo(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi = np.maximum(np.maximum(r, g), b).astype(np.int16)
    lo = np.minimum(np.minimum(r, g), b).astype(np.int16)
    return hi, lo


def _drop_small_objects(mask: np.ndarray, min_area: float) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]

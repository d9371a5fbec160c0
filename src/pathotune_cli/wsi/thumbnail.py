"""Pictures of a slide: the thumbnail with its tissue outline and tile grid, and prediction heatmaps.

Everything is drawn with Pillow on the thumbnail the tissue mask was computed from, so a picture costs no
extra slide reading. Level-0 coordinates are scaled onto the thumbnail here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.wsi.tissue import Polygon

# Distinct colours for classes (the first ten are the usual categorical palette), repeated when needed.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (57, 59, 121),  # not tab10's grey: grey is the colour of pathotune's own Uncertain class
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
)
# Anchors of a viridis-like ramp for probabilities, 0 -> 1.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)
OUTLINE = (0, 200, 70)
GRID = (40, 90, 220)


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours, one per class, stable across runs."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def ramp(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along a viridis-like ramp."""
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(v).astype(int), len(_RAMP) - 2)
    frac = (v - lo)[..., None]
    return np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def draw_overview(
    thumbnail: np.ndarray,
    level0_size: tuple[int, int],
    *,
    polygons: Sequence[Polygon] = (),
    coords: np.ndarray | None = None,
    size_level0: int = 0,
    max_size: int = 1024,
) -> np.ndarray:
    """The thumbnail with the tissue outline (green) and each kept tile's square (blue).

    Args:
        thumbnail: RGB uint8 thumbnail of the whole slide.
        level0_size: (width, height) of level 0.
        polygons: Tissue contours in level-0 pixels.
        coords: ``(N, 2)`` level-0 top-left x, y of the tiles to draw.
        size_level0: Tile side in level-0 pixels.
        max_size: Long side of the picture.

    Returns:
        The picture as RGB uint8.
    """
    from PIL import ImageDraw

    img, scale = _base(thumbnail, level0_size, max_size)
    draw = ImageDraw.Draw(img, "RGBA")
    if coords is not None and size_level0:
        side = size_level0 * scale
        for x, y in np.asarray(coords, np.float64).reshape(-1, 2) * scale:
            draw.rectangle((x, y, x + side, y + side), outline=(*GRID, 170))
    width = max(1, round(max(img.size) / 400))
    for polygon in polygons:
        for ring in polygon:
            points = [tuple(p) for p in (np.asarray(ring) * scale).tolist()]
            if len(points) >= 2:
                draw.line(points + [points[0]], fill=OUTLINE, width=width)
    return np.asarray(img.convert("RGB"))


def draw_heatmap(
    thumbnail: np.ndarray,
    level0_size: tuple[int, int],
    coords: np.ndarray,
    size_level0: int,
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    show: str | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    alpha: float = 0.55,
    max_size: int = 1024,
) -> np.ndarray:
    """Tiles coloured over the thumbnail, with a legend on the right.

    Args:
        thumbnail: RGB uint8 thumbnail of the whole slide.
        level0_size: (width, height) of level 0.
        coords: ``(N, 2)`` level-0 top-left x, y.
        size_level0: Tile side in level-0 pixels.
        probs: ``(N, C)`` class probabilities.
        class_names: The C class names.
        show: None colours each tile by its most probable class; a class name colours it by that class's
            probability on a 0-1 ramp.
        colors: One RGB colour per class (argmax mode); defaults to ``class_colors``.
        alpha: Opacity of the tile colours.
        max_size: Long side of the slide part of the picture.

    Returns:
        The picture as RGB uint8.
    """
    from PIL import Image, ImageDraw

    probs = np.asarray(probs, np.float64).reshape(len(coords), len(class_names))
    if show is not None and show not in class_names:
        raise ValueError(f"unknown class {show!r}; classes are {', '.join(class_names)}")
    colors = list(colors) if colors is not None else class_colors(len(class_names))
    if show is None:
        fills = (
            np.array(colors, np.uint8)[probs.argmax(axis=1)] if len(coords) else np.zeros((0, 3), np.uint8)
        )
        legend = [(name, tuple(c)) for name, c in zip(class_names, colors, strict=True)]
        title = "most probable class"
    else:
        fills = ramp(probs[:, list(class_names).index(show)])
        legend = [(f"{v:.2f}", tuple(int(c) for c in ramp(np.array(v)))) for v in (1.0, 0.75, 0.5, 0.25, 0.0)]
        title = f"P({show})"
    img, scale = _base(thumbnail, level0_size, max_size)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    a = round(255 * alpha)
    side = size_level0 * scale
    for (x, y), fill in zip(
        np.asarray(coords, np.float64).reshape(-1, 2) * scale, fills.tolist(), strict=True
    ):
        draw.rectangle((x, y, x + side, y + side), fill=(*fill, a))
    img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
    return np.asarray(_with_legend(img, title, legend))


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG to ``path`` (callers stage it; ``files.PNG_COMPRESSION`` as every PNG)."""
    from PIL import Image

    from pathotune_cli.files import PNG_COMPRESSION

    path = Path(path)
    Image.fromarray(np.asarray(rgb, np.uint8)).save(path, format="PNG", compress_level=PNG_COMPRESSION)
    return path


def _base(thumbnail: np.ndarray, level0_size: tuple[int, int], max_size: int) -> tuple[Any, float]:
    from PIL import Image

    img = Image.fromarray(np.asarray(thumbnail, np.uint8))
    if max(img.size) > max_size:
        factor = max_size / max(img.size)
        img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.BOX)
    return img, img.width / level0_size[0]


def _with_legend(img: Any, title: str, entries: Sequence[tuple[str, tuple[int, ...]]]) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, img.height // 50))
    box = font.size
    gap = box // 2
    labels = [title] + [name for name, _ in entries]
    text_w = max(int(ImageDraw.Draw(img).textlength(t, font=font)) for t in labels)
    width = gap * 3 + box + text_w
    height = max(img.height, gap + (len(entries) + 1) * (box + gap))
    canvas = Image.new("RGB", (img.width + width, height), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = img.width + gap
    draw.text((x, gap), title, fill=(0, 0, 0), font=font)
    for i, (name, color) in enumerate(entries, start=1):
        y = gap + i * (box + gap)
        draw.rectangle((x, y, x + box, y + box), fill=tuple(color), outline=(60, 60, 60))
        draw.text((x + box + gap, y), name, fill=(0, 0, 0), font=font)
    return canvas

"""Synthetic H&E-like textures for the demo: one distinct colour and texture per class, seeded.

Numpy only. Each class is a drawing rule, so the same rule paints both the demo's labelled tiles and the
regions of its generated slide; a tile cut anywhere inside a region looks like that class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_CLASSES = ("tumor", "stroma", "lymphocytes", "adipose")
BACKGROUND = np.array([242, 240, 244], dtype=np.float32)
_PINK = np.array([232, 170, 200], dtype=np.float32)
_PURPLE = np.array([95, 55, 140], dtype=np.float32)


def texture(class_index: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) uint8 patch of class ``class_index`` of ``DEMO_CLASSES``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    name = DEMO_CLASSES[class_index]
    if name == "tumor":
        img = np.broadcast_to(np.array([200, 140, 190], np.float32), (height, width, 3)).copy()
        img = _blobs(img, rng, xx, yy, count=max(1, height * width // 300), radius=(5, 9), colour=_PURPLE * 0.8)
    elif name == "stroma":
        phase = rng.uniform(0, 2 * np.pi)
        angle = rng.uniform(0, np.pi)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 3.0 + 2 * np.sin(yy / 17.0 + phase))
        img = _PINK[None, None] + (wave[..., None] * np.array([18, 30, 18], np.float32))
        img = _blobs(img, rng, xx, yy, count=max(1, height * width // 2500), radius=(1.5, 2.5), colour=_PURPLE)
    elif name == "lymphocytes":
        img = np.broadcast_to(np.array([225, 185, 215], np.float32), (height, width, 3)).copy()
        img = _blobs(
            img, rng, xx, yy, count=max(1, height * width // 60), radius=(2, 3.2),
            colour=np.array([40, 30, 110], np.float32),
        )
    else:  # adipose
        img = np.broadcast_to(np.array([246, 226, 238], np.float32), (height, width, 3)).copy()
        from scipy.spatial import cKDTree

        cells = rng.uniform(-8, [width + 8, height + 8], size=(max(2, (height + 16) * (width + 16) // 180), 2))
        d, _ = cKDTree(cells).query(np.column_stack([xx.ravel(), yy.ravel()]), k=2)
        d = d.reshape(height, width, 2)
        border = np.clip(1.0 - (d[..., 1] - d[..., 0]) / 3.0, 0, 1)
        img = img * (1 - border[..., None]) + _PINK * border[..., None]
    img = img + rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_demo_tiles(root: Path, per_class: int = 40, size: int = 112, seed: int = 0) -> Path:
    """An ImageFolder tree of synthetic tiles, one folder per demo class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(DEMO_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(texture(index, size, size, rng)).save(folder / f"{name}_{i:03d}.png")
    return root


def region_class(x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    """The demo slide's layout: a tissue ellipse cut into four class quadrants; -1 is background."""
    cx, cy = width / 2, height / 2
    inside = ((x - cx) / (0.45 * width)) ** 2 + ((y - cy) / (0.45 * height)) ** 2 <= 1.0
    quadrant = (x >= cx).astype(int) + 2 * (y >= cy).astype(int)
    return np.where(inside, quadrant, -1)


def slide_tile(x: int, y: int, w: int, h: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Pixels of the demo slide's level 0 in the box (x, y, w, h): textures inside regions, glass outside."""
    rng = np.random.default_rng([seed, x, y])
    yy, xx = np.mgrid[y : y + h, x : x + w]
    classes = region_class(xx + 0.5, yy + 0.5, width, height)
    out = np.broadcast_to(BACKGROUND.astype(np.uint8), (h, w, 3)).copy()
    for index in np.unique(classes):
        if index < 0:
            continue
        mask = classes == index
        out[mask] = texture(int(index), h, w, rng)[mask]
    return out


def _blobs(
    img: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray,
    count: int, radius: tuple[float, float], colour: np.ndarray,
) -> np.ndarray:
    """Paint ``count`` soft round nuclei of random radius onto ``img``."""
    height, width = xx.shape
    centres = rng.uniform(0, [width, height], size=(count, 2))
    radii = rng.uniform(*radius, size=count)
    for (cx, cy), r in zip(centres, radii, strict=True):
        x0, x1 = int(max(0, cx - r - 2)), int(min(width, cx + r + 3))
        y0, y1 = int(max(0, cy - r - 2)), int(min(height, cy + r + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        d = np.sqrt((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2)
        alpha = np.clip(r - d + 0.5, 0, 1)[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - alpha) + colour * alpha
    return img


def planted_class(x: np.ndarray, y: np.ndarray, width: int, height: int,
                  tumour: tuple[float, float, float] | None) -> np.ndarray:
    """The slide-level demo's layout: a tissue ellipse of stroma (left) and adipose (right) on glass, with a
    round tumour region ``(cx, cy, r)`` planted in it on positive slides; -1 is background."""
    cx, cy = width / 2, height / 2
    inside = ((x - cx) / (0.46 * width)) ** 2 + ((y - cy) / (0.46 * height)) ** 2 <= 1.0
    classes = np.where(x < cx, DEMO_CLASSES.index("stroma"), DEMO_CLASSES.index("adipose"))
    if tumour is not None:
        tx, ty, r = tumour
        classes = np.where((x - tx) ** 2 + (y - ty) ** 2 <= r**2, DEMO_CLASSES.index("tumor"), classes)
    return np.where(inside, classes, -1)


def planted_tile(x: int, y: int, w: int, h: int, width: int, height: int,
                 tumour: tuple[float, float, float] | None, seed: int = 0) -> np.ndarray:
    """Pixels of a slide-level demo slide's level 0 in the box (x, y, w, h)."""
    rng = np.random.default_rng([seed, x, y])
    yy, xx = np.mgrid[y : y + h, x : x + w]
    classes = planted_class(xx + 0.5, yy + 0.5, width, height, tumour)
    out = np.broadcast_to(BACKGROUND.astype(np.uint8), (h, w, 3)).copy()
    for index in np.unique(classes):
        if index >= 0:
            mask = classes == index
            out[mask] = texture(int(index), h, w, rng)[mask]
    return out


def tumour_region(index: int, width: int, height: int, seed: int = 0) -> tuple[float, float, float]:
    """A seeded round tumour region inside the tissue of slide ``index``: (cx, cy, radius) in level-0 pixels."""
    rng = np.random.default_rng([seed, index, 7])
    radius = float(rng.uniform(0.24, 0.28) * min(width, height))
    angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.35)
    cx = width / 2 + np.cos(angle) * reach * (0.46 * width - radius)
    cy = height / 2 + np.sin(angle) * reach * (0.46 * height - radius)
    return cx, cy, radius

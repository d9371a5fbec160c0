"""The plain slide thumbnail a per-slide command leaves beside its outputs, for pictures drawn later.

``<stem>.thumb.jpg``: the thumbnail the tissue mask was computed on (no outline, no map), as a small JPEG whose
comment holds the slide's level-0 size, so a later reader (``pathotune report``) can place level-0 tile
coordinates on it without opening the slide again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

THUMBNAIL_SUFFIX = ".thumb.jpg"
THUMBNAIL_FORMAT = "pathotune-thumbnail"
THUMBNAIL_MAX_SIZE = 1024
"""Long side of the saved thumbnail in pixels (about 50-150 KB as JPEG)."""


def save_slide_thumbnail(path: str | Path, thumbnail: np.ndarray, level0_size: tuple[int, int],
                         max_size: int = THUMBNAIL_MAX_SIZE, quality: int = 85) -> Path:
    """Write ``thumbnail`` (RGB uint8, the whole slide) as JPEG with the slide's level-0 (width, height).

    Callers stage ``path`` (a temporary name renamed with the slide's other outputs).
    """
    from PIL import Image

    img = Image.fromarray(np.asarray(thumbnail, np.uint8)).convert("RGB")
    if max(img.size) > max_size:
        factor = max_size / max(img.size)
        img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))), Image.BOX)
    comment = json.dumps({"format": THUMBNAIL_FORMAT, "level0_size": [int(v) for v in level0_size]})
    img.save(path, format="JPEG", quality=quality, comment=comment.encode())
    return Path(path)


def slide_thumbnail_level0_size(path: str | Path) -> tuple[int, int] | None:
    """The level-0 (width, height) a ``save_slide_thumbnail`` JPEG records, or None for any other image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            raw = img.info.get("comment", b"")
    except (OSError, UnidentifiedImageError):
        return None
    try:
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        width, height = (int(v) for v in meta["level0_size"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if meta.get("format") != THUMBNAIL_FORMAT or width < 1 or height < 1:
        return None
    return width, height

"""Flat images (PNG, JPEG, strip TIFF) as a one-level slide, for files OpenSlide refuses.

The image is decoded once into memory, so this reader is for images that fit in it; ``imaging.read_rgb``
refuses larger ones (``imaging.MAX_PIXELS``, about 179 megapixels) before decoding, with a line that says what
to do, and converts every mode to 8-bit RGB as ``tune`` and ``predict`` do for tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pathotune_cli.wsi.mpp as mpp_meta
from pathotune_cli.imaging import read_rgb
from pathotune_cli.wsi.reader import SlideReader


class ImageReader(SlideReader):
    """A flat raster image as a single-level slide."""

    backend = "image"

    def __init__(self, path: str | Path) -> None:
        """Decode ``path`` (``imaging.read_rgb``); raises BadInput when it does not decode or is too large."""
        super().__init__(path)
        decoded = read_rgb(self.path)
        self._info = decoded.info
        self._format = decoded.format
        self._rgb = decoded.rgb

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """One level: the image's (width, height)."""
        h, w = self._rgb.shape[:2]
        return ((w, h),)

    @property
    def mpp(self) -> float | None:
        """From the file's dots-per-inch (TIFF resolution, PNG pHYs, JPEG JFIF), or None."""
        dpi = self._info.get("dpi")
        if not dpi:
            return None
        try:
            value = float(dpi[0])
        except (TypeError, ValueError, IndexError):
            return None
        return mpp_meta.mpp_from_resolution(value, 2)

    @property
    def mpp_source(self) -> str | None:
        """``image-dpi`` when the file states a resolution."""
        return "image-dpi" if self.mpp is not None else None

    @property
    def properties(self) -> dict[str, str]:
        """The image format."""
        return {"image.format": self._format}

    def close(self) -> None:
        """Drop the decoded pixels."""
        self._rgb = np.empty((0, 0, 3), np.uint8)

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return self._rgb[y : y + h, x : x + w].copy()

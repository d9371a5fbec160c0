"""Flat images (PNG, JPEG, strip TIFF) as a one-level slide, for files OpenSlide refuses.

The image is decoded once into memory, so this reader is for images that fit in it; Pillow's
decompression-bomb limit (about 179 megapixels) refuses larger ones with a line that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi import mpp as mpp_meta
from pathotune_cli.wsi.reader import SlideReader, first_line, rgba_to_rgb

_TOO_LARGE_FIX = "convert it to a tiled pyramid TIFF first (vips tiffsave --tile --pyramid)"


class ImageReader(SlideReader):
    """A flat raster image as a single-level slide."""

    backend = "image"

    def __init__(self, path: str | Path) -> None:
        """Decode ``path`` with Pillow; raises BadInput when Pillow cannot."""
        from PIL import Image, UnidentifiedImageError

        super().__init__(path)
        try:
            with Image.open(self.path) as img:
                self._info = dict(img.info)
                self._format = img.format or ""
                rgb = np.asarray(
                    img.convert("RGBA")
                    if "A" in img.mode or "transparency" in img.info
                    else img.convert("RGB")
                )
        except Image.DecompressionBombError as exc:
            raise BadInput(f"{self.path.name}: a flat image too large to read whole", _TOO_LARGE_FIX) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise BadInput(f"{self.path.name}: not an image Pillow can read ({first_line(exc)})") from exc
        self._rgb = np.ascontiguousarray(rgba_to_rgb(rgb))

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

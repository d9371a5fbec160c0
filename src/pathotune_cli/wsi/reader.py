"""One interface over every slide backend, so tiling and prediction never ask which library read a slide.

``SlideReader.read_region`` is a template method: it checks that the level exists and that the region lies
on the slide, clips and pads where asked, and only then calls the backend's ``_read`` with a request that is
always inside the level. Backends return RGB uint8; nothing transparent or blank leaves this class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.imaging import composite_on_white

WHITE = 255
# Rows of a level read at once when a thumbnail is built, so memory stays flat in slide size.
_THUMB_CHUNK_BYTES = 16 * 1024 * 1024


class DamagedSlide(BadInput):
    """The file is a slide format but its contents are cut short or corrupt; no other reader does better."""


class DamagedTile(DamagedSlide):
    """One stored tile (or subblock) of a readable slide does not decode; the rest of the slide may well.

    Tile readers retry it from a coarser level (``wsi.damage``); raised past them only when nothing could.
    """


class SlideReader(ABC):
    """A whole-slide image as a pyramid of levels, read as RGB uint8.

    Coordinates: ``x0, y0`` are level-0 pixels (top-left); ``w, h`` are pixels at the requested level,
    as in OpenSlide. Subclasses implement ``level_dimensions``, ``_read`` and ``close``; the rest has
    defaults they may override.
    """

    backend: str = "abstract"

    def __init__(self, path: str | Path) -> None:
        """Remember the file; subclasses open it."""
        self.path = Path(path)

    # -- what a backend describes ---------------------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of every level against level 0 (the mean of the x and y ratios, as OpenSlide)."""
        w0, h0 = self.level_dimensions[0]
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions)

    @property
    def levels(self) -> int:
        """Number of levels."""
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel as the file states it, or None. Not checked: see ``wsi.mpp``."""
        return None

    @property
    def mpp_source(self) -> str | None:
        """Where ``mpp`` came from in the file (``tiff-resolution``, ``aperio-description``, ...), or None."""
        return None

    @property
    def objective_power(self) -> float | None:
        """Scanner objective magnification (e.g. 20 or 40) when the file states it, else None."""
        return None

    @property
    def associated_images(self) -> dict[str, np.ndarray]:
        """Label, macro and thumbnail images stored beside the pyramid, as RGB uint8, by lower-case name."""
        return {}

    @property
    def properties(self) -> dict[str, str]:
        """Metadata as flat strings (vendor-specific keys), for display only."""
        return {}

    @abstractmethod
    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Read a region given in pixels of ``level`` that lies wholly inside that level.

        Returns:
            An ``(h, w, 3)`` uint8 RGB array.
        """

    @abstractmethod
    def close(self) -> None:
        """Release files and handles."""

    # -- the template ---------------------------------------------------------------------------------
    def read_region(self, x0: int, y0: int, level: int, w: int, h: int, *, pad: bool = False) -> np.ndarray:
        """Read a ``w`` x ``h`` region of ``level`` whose top-left is ``(x0, y0)`` in level-0 pixels.

        Args:
            x0: Left edge in level-0 pixels.
            y0: Top edge in level-0 pixels.
            level: Pyramid level; one that does not exist is an error, never a blank image.
            w: Width in pixels of ``level``.
            h: Height in pixels of ``level``.
            pad: Fill the part of the region that lies outside the slide with white instead of failing.

        Returns:
            An ``(h, w, 3)`` uint8 RGB array.

        Raises:
            BadInput: The level does not exist, the size is not positive, or (without ``pad``) the
                region leaves the slide.
        """
        self._check_level(level)
        if w <= 0 or h <= 0:
            raise BadInput(f"{self.path.name}: region size {w}x{h} is not positive")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        x, y = round(x0 / ds), round(y0 / ds)
        inside = x >= 0 and y >= 0 and x + w <= lw and y + h <= lh
        if inside:
            return self._checked(self._read(x, y, level, w, h), w, h)
        if not pad:
            raise BadInput(
                f"{self.path.name}: region ({x0}, {y0}) {w}x{h} at level {level} leaves the slide "
                f"({lw}x{lh} at that level)",
                "read inside the level, or pass pad=True to fill the outside with white",
            )
        out = np.full((h, w, 3), WHITE, np.uint8)
        cx0, cy0 = max(x, 0), max(y, 0)
        cx1, cy1 = min(x + w, lw), min(y + h, lh)
        if cx1 > cx0 and cy1 > cy0:
            part = self._checked(self._read(cx0, cy0, level, cx1 - cx0, cy1 - cy0), cx1 - cx0, cy1 - cy0)
            out[cy0 - y : cy1 - y, cx0 - x : cx1 - x] = part
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (level 0 if none)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = i
        return best

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide shrunk to fit ``max_size`` on its long side, as RGB uint8.

        Reads the coarsest level that is still at least as large as the thumbnail, a band of rows at a time,
        so a slide whose only level is huge still never sits in memory whole. Where that level holds a tile
        that does not decode, the next coarser level serves; where none is left, the bands are read in
        blocks and an undecodable block is white.
        """
        w0, h0 = self.dimensions
        scale = min(1.0, max_size / max(w0, h0))
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = self.best_level_for_downsample(min(w0 / tw, h0 / th))
        for candidate in range(level, self.levels):
            try:
                return self._thumbnail_from(candidate, tw, th, tolerant=False)
            except DamagedTile:
                continue
        return self._thumbnail_from(self.levels - 1, tw, th, tolerant=True)

    def _thumbnail_from(self, level: int, tw: int, th: int, *, tolerant: bool) -> np.ndarray:
        from PIL import Image

        lw, lh = self.level_dimensions[level]
        rows = max(1, min(lh, _THUMB_CHUNK_BYTES // (lw * 3)))
        out = np.empty((th, tw, 3), np.uint8)
        ys = lh / th  # level rows per thumbnail row
        step = max(1, math.floor(rows / ys))
        for ty in range(0, th, step):
            ty1 = min(th, ty + step)
            ly0, ly1 = math.floor(ty * ys), min(lh, math.ceil(ty1 * ys))
            read = self._read_blocks if tolerant else self._read_band
            band = Image.fromarray(self._checked(read(0, ly0, level, lw, ly1 - ly0), lw, ly1 - ly0))
            box = (0.0, ty * ys - ly0, float(lw), ty1 * ys - ly0)
            out[ty:ty1] = np.asarray(band.resize((tw, ty1 - ty), Image.Resampling.BOX, box=box))
        return out

    def _read_blocks(self, x: int, y: int, level: int, w: int, h: int, block: int = 256) -> np.ndarray:
        """A band read in ``block``-pixel squares, each one that does not decode left white."""
        out = np.full((h, w, 3), WHITE, np.uint8)
        for by in range(y, y + h, block):
            for bx in range(x, x + w, block):
                bw, bh = min(block, x + w - bx), min(block, y + h - by)
                try:
                    out[by - y : by - y + bh, bx - x : bx - x + bw] = self._read(bx, by, level, bw, bh)
                except DamagedTile:
                    continue
        return out

    def _read_band(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """A wide band of a level, read once for a thumbnail; a backend may decode it in parallel."""
        return self._read(x, y, level, w, h)

    # -- context manager ------------------------------------------------------------------------------
    def __enter__(self) -> SlideReader:
        """Use the reader in a ``with`` block; it closes at the end."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the reader."""
        self.close()

    def __repr__(self) -> str:
        """Class, path, levels and size."""
        return f"{type(self).__name__}({str(self.path)!r}, levels={self.levels}, dims={self.dimensions})"

    # -- private --------------------------------------------------------------------------------------
    def _check_level(self, level: int) -> None:
        if not isinstance(level, (int, np.integer)) or not 0 <= level < self.levels:
            raise BadInput(
                f"{self.path.name}: level {level} does not exist; the slide has levels 0-{self.levels - 1}"
            )

    def _checked(self, rgb: np.ndarray, w: int, h: int) -> np.ndarray:
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise RuntimeError(
                f"{self.backend} backend returned {rgb.shape} {rgb.dtype}, expected ({h}, {w}, 3)"
            )
        return rgb


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA (not premultiplied, as openslide-python returns it) onto white; transparent -> white."""
    return composite_on_white(rgba)


def read_tile(
    reader: SlideReader, x0: int, y0: int, level: int, read_size: int, tile_size: int
) -> np.ndarray:
    """One tile: ``read_size`` pixels of ``level`` at level-0 ``(x0, y0)``, resized to ``tile_size``.

    Parts outside the slide (a pixel of pyramid rounding at the far edge) are white.
    """
    from PIL import Image

    region = reader.read_region(int(x0), int(y0), level, read_size, read_size, pad=True)
    if read_size == tile_size:
        return region
    return np.asarray(Image.fromarray(region).resize((tile_size, tile_size), Image.Resampling.BILINEAR))

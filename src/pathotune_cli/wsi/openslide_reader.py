"""OpenSlide as a backend: SVS, NDPI, MRXS, SCN, BIF, Philips TIFF, DICOM-WSI and the rest it reads.

OpenSlide returns RGBA; transparent pixels (outside a scan's regions, or a level that does not exist, which
the template refuses before we get here) are composited onto white so only RGB leaves this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, MissingDependency, first_line
from pathotune_cli.wsi.reader import DamagedSlide, DamagedTile, SlideReader, rgba_to_rgb

INSTALL = "pip install openslide-python openslide-bin"


class OpenSlideReader(SlideReader):
    """A slide read through OpenSlide."""

    backend = "openslide"

    def __init__(self, path: str | Path) -> None:
        """Open ``path``; raises BadInput when OpenSlide does not recognise or cannot read it."""
        openslide = import_openslide()
        super().__init__(path)
        try:
            self._slide: Any = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise BadInput(f"{self.path.name}: not a slide format OpenSlide reads") from exc
        except openslide.OpenSlideError as exc:
            raise DamagedSlide(
                f"{self.path.name}: OpenSlide cannot read it ({first_line(exc)})",
                "the file may be damaged or truncated; copy it again",
            ) from exc
        self._error_type = openslide.OpenSlideError

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""
        return tuple(self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """OpenSlide's own downsamples."""
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def mpp(self) -> float | None:
        """``openslide.mpp-x`` (the mean with ``mpp-y`` where both are stated)."""
        props = self._slide.properties
        values = [_float(props.get(k)) for k in ("openslide.mpp-x", "openslide.mpp-y")]
        found = [v for v in values if v]
        return sum(found) / len(found) if found else None

    @property
    def mpp_source(self) -> str | None:
        """``openslide-properties`` when OpenSlide states an mpp."""
        return "openslide-properties" if self.mpp is not None else None

    @property
    def objective_power(self) -> float | None:
        """``openslide.objective-power``, or None."""
        return _float(self._slide.properties.get("openslide.objective-power"))

    @property
    def associated_images(self) -> dict[str, np.ndarray]:
        """OpenSlide's associated images (label, macro, thumbnail), as RGB uint8."""
        return {name: rgba_to_rgb(np.asarray(img)) for name, img in self._slide.associated_images.items()}

    @property
    def properties(self) -> dict[str, str]:
        """OpenSlide's properties."""
        return dict(self._slide.properties)

    def close(self) -> None:
        """Close the OpenSlide handle."""
        self._slide.close()

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        try:
            region = self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h))
        except self._error_type as exc:
            self._reopen()  # OpenSlide's errors are sticky: the handle refuses every later call
            raise DamagedTile(
                f"{self.path.name}: OpenSlide cannot read a region of level {level} ({first_line(exc)})",
                "the file may be damaged or truncated; copy it again",
            ) from exc
        return rgba_to_rgb(np.asarray(region))

    def _reopen(self) -> None:
        """A fresh handle after an error, so a coarser level (or the next tile) can still be read."""
        openslide = import_openslide()
        try:
            self._slide.close()
        except self._error_type:
            pass
        self._slide = openslide.OpenSlide(str(self.path))


def import_openslide() -> Any:
    """Import openslide-python with its binary, or say which ``pip install`` adds them."""
    try:
        import openslide
    except ImportError as exc:  # openslide-python raises ImportError when the binary is missing too
        raise MissingDependency(f"OpenSlide is not installed ({first_line(exc)})", INSTALL) from exc
    return openslide


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result > 0 else None

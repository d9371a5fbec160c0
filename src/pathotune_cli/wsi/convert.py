"""Convert any slide ``open_slide`` reads (CZI, OME-Zarr, OME-TIFF, DICOM, MRXS, ...) to a tiled pyramidal generic
TIFF that OpenSlide, QuPath, WSInfer, CLAM and TRIDENT all read.

Level 0 is read one stored tile at a time, in row order; each reduced level (factor 2) is built from the rows
above it by box averaging as they stream past (``synthetic.write_pyramid_tiff``), and its finished tiles wait,
encoded, in a temporary file beside the output rather than in memory: memory stays flat in slide size (a band
of level-0 rows, the width of the slide). Tiles are JPEG (quality 90, YCbCr 4:2:0) or, with ``lossless``,
deflate. The mpp goes into every level's resolution tags (centimetre units), which is where OpenSlide reads a
generic TIFF's ``openslide.mpp-x``. A level-0 tile that does not decode is read from a coarser level of the
source, and counted (``wsi.damage``). The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pathotune_cli.wsi.damage import DEFAULT_MAX_DAMAGED, TileDamage, read_tile_tolerant

TILE = 256
FACTOR = 2
MIN_LEVEL_SIZE = 256
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert_slide`` wrote."""

    source: Path
    """The slide read."""
    path: Path
    """The pyramidal TIFF written."""
    backend: str
    """The reader that read the source."""
    level_dimensions: tuple[tuple[int, int], ...]
    """(width, height) of every level written, level 0 first."""
    mpp: float | None
    """Microns per level-0 pixel written to the resolution tags (None: the source states none)."""
    compression: str
    """``jpeg`` or ``zlib`` (deflate, lossless)."""
    tiles_damaged: int
    """Level-0 tiles of the source that did not decode and were filled from a coarser level (or left white)."""
    seconds: float
    """Wall time of the conversion."""


def convert_slide(
    slide: str | Path,
    out: str | Path,
    *,
    lossless: bool = False,
    quality: int = JPEG_QUALITY,
    mpp: float | None = None,
    backend: str = "auto",
    max_damaged: float | None = DEFAULT_MAX_DAMAGED,
) -> ConvertResult:
    """Write ``slide`` as a tiled pyramidal generic TIFF at ``out``.

    Args:
        slide: Any slide ``open_slide`` reads.
        out: The ``.tiff`` to write (written to a temporary name beside it, then renamed).
        lossless: Deflate tiles instead of JPEG.
        quality: JPEG quality.
        mpp: Microns per pixel to write instead of the source's own (a slides CSV value); None keeps the
            source's, and a source without one gets no resolution tags.
        backend: Reader backend (see ``open_slide``).
        max_damaged: Share of level-0 tiles that may fail to decode before the conversion fails.

    Returns:
        The ``ConvertResult``.

    Raises:
        BadInput: The slide cannot be read, or more than ``max_damaged`` of its tiles are damaged.
        OSError: The output cannot be written (nothing is left at ``out``).
    """
    import pathotune_cli.wsi.mpp as mpp_meta
    from pathotune_cli.files import atomic_write
    from pathotune_cli.wsi.open import open_slide
    from pathotune_cli.wsi.synthetic import pyramid_sizes, write_pyramid_tiff

    start = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_slide(slide, backend) as reader:
        width, height = reader.dimensions
        value = mpp if mpp is not None else reader.mpp
        value = value if mpp_meta.plausible(value) else None
        tiles = -(-width // TILE) * -(-height // TILE)
        damage = TileDamage(reader.path.name, total=tiles, max_share=max_damaged)

        def tile_fn(x: int, y: int, w: int, h: int) -> np.ndarray:
            return read_tile_tolerant(reader, x, y, 0, TILE, TILE, damage)[0][:h, :w]

        compression = "zlib" if lossless else "jpeg"
        description = f"pathotune convert: {reader.path.name} ({reader.backend})"
        with tempfile.TemporaryFile(dir=out.parent) as spill:  # unnamed: gone with this process, whatever happens
            atomic_write(out, lambda temp: write_pyramid_tiff(
                temp, width, height, tile_fn, mpp=value, tile=TILE, factor=FACTOR, min_level_size=MIN_LEVEL_SIZE,
                quality=quality, compression=compression, description=description, store=lambda: SpillStore(spill),
            ))
        return ConvertResult(
            source=reader.path, path=out, backend=reader.backend,
            level_dimensions=tuple(pyramid_sizes(width, height, FACTOR, MIN_LEVEL_SIZE)), mpp=value,
            compression=compression, tiles_damaged=damage.count, seconds=time.perf_counter() - start,
        )


class SpillStore(MutableMapping[tuple[int, int], object]):
    """A reduced level's waiting tiles, their bytes appended to a shared temporary file; memory holds offsets."""

    def __init__(self, spill: BinaryIO) -> None:
        self._spill = spill
        self._index: dict[tuple[int, int], tuple[int, int] | tuple[int, ...]] = {}

    def __setitem__(self, key: tuple[int, int], value: object) -> None:
        if isinstance(value, (bytes, bytearray)):
            self._spill.seek(0, os.SEEK_END)
            offset = self._spill.tell()
            self._spill.write(value)
            self._index[key] = ("bytes", offset, len(value))  # type: ignore[assignment]
        else:  # a uniform tile's colour
            self._index[key] = ("colour", *value)  # type: ignore[assignment]

    def __getitem__(self, key: tuple[int, int]) -> object:
        kind, *rest = self._index[key]
        if kind == "colour":
            return tuple(rest)
        offset, length = rest
        self._spill.seek(offset)
        return self._spill.read(length)

    def __delitem__(self, key: tuple[int, int]) -> None:
        del self._index[key]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

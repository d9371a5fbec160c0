"""Write a generic JPEG-tiled pyramid TIFF from a tile function, for tests, benchmarks and the demo.

Level 0 is generated one row of tiles at a time from ``tile_fn(x, y, w, h)``; each reduced level is built
from the rows above it by 2x2 ... box averaging as they stream past and kept as JPEG-compressed tiles (a
uniform background tile as just its colour), so a 50,000 x 50,000 mostly-background slide is written without
ever holding a level in memory. Reduced levels are ``subfiletype=1`` pages in the main IFD chain and the mpp
is in the resolution tags, which is what OpenSlide needs to read it as a generic TIFF pyramid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import numpy as np

TileFn = Callable[[int, int, int, int], np.ndarray]
TileStore = MutableMapping[tuple[int, int], object]
"""Where a reduced level's finished tiles wait (encoded, or a uniform tile's colour) until that level is written."""
COMPRESSIONS = ("jpeg", "zlib")
BACKGROUND = (243, 243, 241)


def pyramid_sizes(width: int, height: int, factor: int, min_level_size: int) -> list[tuple[int, int]]:
    """(width, height) of each level: divide by ``factor`` while the long side stays >= ``min_level_size``."""
    sizes = [(width, height)]
    while max(sizes[-1]) // factor >= min_level_size:
        sizes.append((sizes[-1][0] // factor, sizes[-1][1] // factor))
    return sizes


def write_pyramid_tiff(
    path: str | Path,
    width: int,
    height: int,
    tile_fn: TileFn,
    *,
    mpp: float | None = 0.5,
    tile: int = 256,
    factor: int = 4,
    min_level_size: int = 512,
    quality: int = 90,
    aperio: bool = False,
    objective_power: float | None = None,
    compression: str = "jpeg",
    description: str | None = None,
    store: Callable[[], TileStore] = dict,
) -> Path:
    """Write a pyramid TIFF whose level 0 is ``width`` x ``height`` pixels drawn by ``tile_fn``.

    Args:
        path: Output file (``.tiff``; use ``.svs`` with ``aperio=True`` for an Aperio-style file).
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        tile_fn: ``tile_fn(x, y, w, h)`` returns the ``(h, w, 3)`` uint8 RGB pixels of level 0 whose
            top-left is ``(x, y)``; it is called once per stored tile, in row order.
        mpp: Microns per level-0 pixel, written to the resolution tags (and the description with ``aperio``);
            None writes no resolution.
        tile: Stored tile side, a multiple of 16.
        factor: Downsample between consecutive levels (2 or 4).
        min_level_size: Stop adding levels once the long side would fall below this.
        quality: JPEG quality.
        aperio: Write an Aperio-style ImageDescription (``AppMag``, ``MPP``) so OpenSlide reports
            vendor ``aperio`` and the objective power.
        objective_power: ``AppMag`` for the Aperio description (default ``10 / mpp``).
        compression: ``jpeg`` (lossy, ``quality``) or ``zlib`` (deflate: lossless; reduced levels wait as PNG).
        description: ImageDescription of level 0 when not ``aperio``.
        store: Makes the container each reduced level's finished tiles wait in (a dict: memory; ``convert``
            passes one that spills them to disk, so memory stays flat in slide size).

    Returns:
        ``path``.
    """
    import tifffile

    if tile % 16 or factor not in (2, 4) or compression not in COMPRESSIONS:
        raise ValueError("tile must be a multiple of 16, factor 2 or 4, compression jpeg or zlib")
    path = Path(path)
    sizes = pyramid_sizes(width, height, factor, min_level_size)
    stores = [store() for _ in sizes[1:]]
    cascade = _Cascade(sizes, tile, factor, compression, stores)
    if aperio:
        description = _aperio_description(width, height, tile, quality, mpp or 0.5, objective_power)
    codec = {"compressionargs": {"level": quality}} if compression == "jpeg" else {}
    common = dict(photometric="rgb", compression=compression, tile=(tile, tile), metadata=None, dtype=np.uint8,
                  **codec)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tw:
        tw.write(_level0_tiles(width, height, tile, tile_fn, cascade), shape=(height, width, 3),
                 description=description or None, subfiletype=0, **_resolution(mpp, 1), **common)
        for level, (w, h) in enumerate(sizes[1:], start=1):
            tw.write(_stored_tiles(stores[level - 1], w, h, tile, compression), shape=(h, w, 3), subfiletype=1,
                     **_resolution(mpp, factor**level), **common)
    return path


def _resolution(mpp: float | None, downsample: int) -> dict[str, object]:
    """tifffile's resolution arguments for a level (pixels per centimetre), or none without an mpp."""
    if mpp is None:
        return {}
    per_cm = 1e4 / (mpp * downsample)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def blobs_tile_fn(width: int, height: int, *, blobs: int = 3, seed: int = 0) -> TileFn:
    """A mostly-background slide with a few pink-purple elliptical tissue blobs, drawn on demand.

    Args:
        width: Level-0 width.
        height: Level-0 height.
        blobs: Number of blobs (each about a tenth of the slide across).
        seed: Random seed for positions and texture.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.15, 0.85, size=(blobs, 2)) * (width, height)
    radii = rng.uniform(0.04, 0.09, size=(blobs, 2)) * min(width, height)

    def tile_fn(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.empty((h, w, 3), np.uint8)
        out[:] = BACKGROUND
        for (cx, cy), (rx, ry) in zip(centres, radii, strict=True):
            if x > cx + rx or x + w < cx - rx or y > cy + ry or y + h < cy - ry:
                continue
            yy, xx = np.mgrid[y : y + h, x : x + w]
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
            if inside.any():
                texture = ((np.sin(xx / 7.0) + np.cos(yy / 5.0)) * 18).astype(np.int16)[inside]
                pink = np.array([205, 120, 170], np.int16)
                out[inside] = np.clip(pink + texture[:, None] * np.array([1, 1, 0.5]), 0, 255).astype(
                    np.uint8
                )
        return out

    return tile_fn


class _Cascade:
    """Box-averages rows of level-k tiles into level k+1 as they stream past, storing finished tiles."""

    def __init__(
        self, sizes: list[tuple[int, int]], tile: int, factor: int, compression: str, store: list[TileStore]
    ) -> None:
        self.sizes, self.tile, self.factor, self.compression, self.store = sizes, tile, factor, compression, store
        self.pending: list[list[np.ndarray]] = [[] for _ in sizes]  # rows waiting, per level >= 1
        self.rows_done = [0 for _ in sizes]

    def push(self, level: int, band: np.ndarray) -> None:
        """Add a band of rows of ``level`` (full level width); emit what becomes complete below it."""
        if level + 1 >= len(self.sizes):
            return
        f = self.factor
        w1, h1 = self.sizes[level + 1]
        rows = band.shape[0] // f
        if rows == 0:
            return
        self._add(level + 1, _box_reduce(band[: rows * f, : w1 * f], f)[:h1])

    def _add(self, level: int, rows: np.ndarray) -> None:
        pending = self.pending[level]
        pending.append(rows)
        have = sum(r.shape[0] for r in pending)
        w, h = self.sizes[level]
        last = self.rows_done[level] + have >= h
        while have >= self.tile or (last and have > 0):
            band = np.concatenate(pending, axis=0)
            take = min(self.tile, band.shape[0])
            self._emit(level, band[:take])
            pending[:] = [band[take:]] if band.shape[0] > take else []
            have -= take
            self.push(level, band[:take])

    def _emit(self, level: int, band: np.ndarray) -> None:

        ty = self.rows_done[level] // self.tile
        self.rows_done[level] += band.shape[0]
        for tx, x in enumerate(range(0, band.shape[1], self.tile)):
            piece = band[:, x : x + self.tile]
            first = piece[0, 0]
            if (piece == first).all():
                self.store[level - 1][ty, tx] = tuple(int(c) for c in first)
            else:
                self.store[level - 1][ty, tx] = _encode(np.ascontiguousarray(piece), self.compression)


def _level0_tiles(
    width: int, height: int, tile: int, tile_fn: TileFn, cascade: _Cascade
) -> Iterator[np.ndarray]:
    # A whole row of tiles is drawn and handed to the cascade before any is yielded: tifffile stops pulling
    # after the last tile, so nothing may wait until after a yield.
    for y in range(0, height, tile):
        h = min(tile, height - y)
        band = np.empty((h, width, 3), np.uint8)
        for x in range(0, width, tile):
            w = min(tile, width - x)
            pixels = np.asarray(tile_fn(x, y, w, h), np.uint8)
            if pixels.shape != (h, w, 3):
                raise ValueError(f"tile_fn({x}, {y}, {w}, {h}) returned {pixels.shape}, expected {(h, w, 3)}")
            band[:, x : x + w] = pixels
        cascade.push(0, band)
        for x in range(0, width, tile):
            yield _padded(band[:, x : x + tile], tile)


def _encode(piece: np.ndarray, compression: str) -> bytes:
    """A reduced level's tile while it waits: JPEG q95 for a JPEG pyramid, PNG (lossless) for a deflate one."""
    import imagecodecs

    return imagecodecs.jpeg_encode(piece, level=95) if compression == "jpeg" else imagecodecs.png_encode(piece)


def _stored_tiles(store: TileStore, width: int, height: int, tile: int, compression: str) -> Iterator[np.ndarray]:
    import imagecodecs

    decode = imagecodecs.jpeg_decode if compression == "jpeg" else imagecodecs.png_decode
    for ty in range(-(-height // tile)):
        for tx in range(-(-width // tile)):
            h, w = min(tile, height - ty * tile), min(tile, width - tx * tile)
            item = store.pop((ty, tx))
            if isinstance(item, tuple):
                pixels = np.empty((h, w, 3), np.uint8)
                pixels[:] = item
            else:
                pixels = decode(item)
            yield _padded(pixels, tile)


def _box_reduce(band: np.ndarray, f: int) -> np.ndarray:
    """Mean of each f x f block (strided adds; several times faster than a 5-D reshape and sum)."""
    rows = band[0::f].astype(np.uint16)
    for i in range(1, f):
        rows += band[i::f]
    total = rows[:, 0::f].copy()
    for i in range(1, f):
        total += rows[:, i::f]
    total += f * f // 2
    total //= f * f
    return total.astype(np.uint8)


def _padded(pixels: np.ndarray, tile: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if (h, w) == (tile, tile):
        return pixels
    out = np.empty((tile, tile, 3), np.uint8)
    out[:] = 255
    out[:h, :w] = pixels
    return out


def _aperio_description(
    width: int, height: int, tile: int, quality: int, mpp: float, objective_power: float | None
) -> str:
    mag = objective_power or round(10.0 / mpp)
    return (
        f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"JPEG/RGB Q={quality}|AppMag = {mag:g}|MPP = {mpp:g}|Filename = pathotune-synthetic"
    )

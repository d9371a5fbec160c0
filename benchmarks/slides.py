"""Generated benchmark slides: JPEG-tiled generic pyramid TIFFs written from a few pre-encoded tiles.

A 20,000 px slide has ~6,000 stored tiles at level 0 and a 100,000 px one ~150,000; drawing and encoding
each would cost minutes. Here a handful of 256 px tiles (demo textures, one glass tile) are JPEG-encoded
once, exactly as ``tifffile`` encodes JPEG tiles itself (YCbCr 4:2:0, ``photometric="rgb"`` in the call, so the
same tags), and every stored tile of every level is one of them, chosen by a layout function. tifffile
writes an iterator of pre-encoded tiles as they are, so writing costs little more than the file's size and
memory stays flat in slide size. Reduced levels are ``subfiletype=1`` pages in the main IFD chain with the mpp
in the resolution tags, which OpenSlide reads as a generic TIFF pyramid (as ``wsi.synthetic`` does).

Reduced levels are not box averages of level 0: they draw the same kinds of tile at their own scale,
which is all a thumbnail, a tissue mask and a reader at the tile's level need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathotune_cli.wsi.synthetic import pyramid_sizes

TILE = 256
# Aperio scanners store JPEG at Q=70-80; with the 3x3 smoothing below a stored tile is ~14 kB, near the
# 10-11 kB of CMU-1's real H&E tiles (the demo textures' pixel noise alone would make 29 kB tiles, twice
# as slow to decode as real tissue, which would flatter nothing but the baselines' share of fixed costs).
QUALITY = 80
GLASS = (243, 243, 241)
# kind(level, tx, ty) -> index into the tissue tiles, or -1 for glass
Layout = Callable[[int, int, int], int]


@dataclass(frozen=True)
class SlideInfo:
    """What was written, for the report."""

    path: Path
    width: int
    height: int
    levels: int
    bytes: int
    seconds: float
    layout: str


def tissue_tiles(count: int = 8, size: int = TILE, seed: int = 0) -> list[np.ndarray]:
    """``count`` H&E-like tiles (the demo textures, cycling through the demo classes, 3x3-smoothed), seeded."""
    from scipy import ndimage

    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(seed)
    tiles = []
    for i in range(count):
        pixels = texture(i % len(DEMO_CLASSES), size, size, rng).astype(np.float32)
        tiles.append(ndimage.uniform_filter(pixels, size=(3, 3, 1)).round().astype(np.uint8))
    return tiles


def encode_tile(pixels: np.ndarray, quality: int = QUALITY) -> bytes:
    """One stored tile, encoded with the arguments tifffile uses for ``compression="jpeg"`` on RGB."""
    import imagecodecs

    return bytes(
        imagecodecs.jpeg_encode(
            np.ascontiguousarray(pixels),
            level=quality,
            subsampling=(2, 2),
            colorspace="RGB",
            outcolorspace="YCBCR",
        )
    )


def everywhere_layout(count: int) -> Layout:
    """Tissue in every tile: a texture picked by a hash of the tile's place, so neighbours differ."""

    def kind(level: int, tx: int, ty: int) -> int:
        return (tx * 73_856_093 ^ ty * 19_349_663 ^ level * 83_492_791) % count

    return kind


def blobs_layout(
    width: int,
    height: int,
    count: int,
    blobs: int = 3,
    seed: int = 0,
    factor: int = 4,
    radius: tuple[float, float] = (1_000, 1_800),
) -> Layout:
    """Mostly glass, with ``blobs`` elliptical tissue regions of ``radius`` level-0 pixels (0.5-0.9 mm at
    0.5 µm/px), so slides of different sizes carry about the same tissue and differ only in glass."""
    rng = np.random.default_rng(seed)
    margin = min(max(radius) / min(width, height), 0.45)
    centres = rng.uniform(margin, 1 - margin, size=(blobs, 2)) * (width, height)
    radii = rng.uniform(*radius, size=(blobs, 2))
    texture = everywhere_layout(count)

    def kind(level: int, tx: int, ty: int) -> int:
        span = TILE * factor**level  # level-0 pixels per stored tile of this level
        cx, cy = (tx + 0.5) * span, (ty + 0.5) * span
        inside = (((cx - centres[:, 0]) / radii[:, 0]) ** 2 + ((cy - centres[:, 1]) / radii[:, 1]) ** 2) <= 1
        return texture(level, tx, ty) if inside.any() else -1

    return kind


def write_slide(
    path: str | Path,
    width: int,
    height: int,
    layout: Layout,
    tiles: list[np.ndarray],
    *,
    mpp: float = 0.5,
    factor: int = 4,
    min_level_size: int = 512,
    name: str = "",
) -> SlideInfo:
    """Write a pyramid whose stored tiles are ``tiles[layout(level, tx, ty)]`` (glass where it is -1)."""
    import time

    import tifffile

    started = time.perf_counter()
    path = Path(path)
    encoded = [encode_tile(t) for t in tiles]
    glass = np.empty((TILE, TILE, 3), np.uint8)
    glass[:] = GLASS
    glass_bytes = encode_tile(glass)
    sizes = pyramid_sizes(width, height, factor, min_level_size)

    def stream(level: int, w: int, h: int) -> Iterator[bytes]:
        for ty in range(-(-h // TILE)):
            for tx in range(-(-w // TILE)):
                k = layout(level, tx, ty)
                yield glass_bytes if k < 0 else encoded[k]

    common = dict(
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": QUALITY},
        tile=(TILE, TILE),
        resolutionunit="CENTIMETER",
        metadata=None,
        dtype=np.uint8,
    )
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tw:
        for level, (w, h) in enumerate(sizes):
            ds = factor**level
            tw.write(
                stream(level, w, h),
                shape=(h, w, 3),
                resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                subfiletype=0 if level == 0 else 1,
                **common,
            )
    return SlideInfo(
        path, width, height, len(sizes), path.stat().st_size, time.perf_counter() - started, name
    )


def slide_everywhere(path: Path, side: int, seed: int = 0) -> SlideInfo:
    """A ``side`` x ``side`` slide at 0.5 µm/px with tissue in every tile."""
    tiles = tissue_tiles(8, seed=seed)
    return write_slide(path, side, side, everywhere_layout(len(tiles)), tiles, name="tissue everywhere")


def slide_blobs(path: Path, side: int, seed: int = 0) -> SlideInfo:
    """A ``side`` x ``side`` slide at 0.5 µm/px, mostly glass with three tissue regions of fixed size."""
    tiles = tissue_tiles(8, seed=seed)
    layout = blobs_layout(side, side, len(tiles), seed=seed)
    return write_slide(path, side, side, layout, tiles, name="three tissue regions on glass")


def digest(path: Path) -> str:
    """A short content hash (to show the inputs are the same from run to run)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]

"""Decode labelled tiles once into a uint8 tensor at the backbone's input size.

A lab's tuning set is a few hundred to a few thousand tiles, so holding them decoded (150 kB each at 224 px)
is cheaper than decoding them again every epoch; above ``max_bytes`` the store decodes batches on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pathotune_cli.imaging import read_rgb

DEFAULT_MAX_BYTES = 4 * 1024**3


def decode_image(path: Path, size: int) -> np.ndarray:
    """One RGB tile resized to ``size`` x ``size``, as uint8 (3, size, size).

    Decoded by ``imaging.read_rgb``: 16-bit tiles scaled to 8 bits, palette, grayscale, CMYK converted,
    transparency on white, EXIF orientation honoured, images above ``imaging.MAX_PIXELS`` refused unread.

    Raises:
        BadInput: the file does not decode as an image, or is refused; naming the file.
    """
    from PIL import Image

    rgb = read_rgb(path).rgb
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


class TileStore(Protocol):
    """What training and evaluation read tiles through: ``ImageStore`` (files), ``ReadStore`` (tiles in slides)."""

    def __len__(self) -> int:
        """Tiles in the store."""
        ...

    def batch(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        """uint8 tiles (B, 3, S, S) at ``index``."""
        ...


class ImageStore:
    """Tiles by index as uint8 (B, 3, S, S); decoded up front when they fit in ``max_bytes``."""

    def __init__(self, paths: list[Path], size: int, threads: int = 4, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.paths = list(paths)
        self.size = size
        self.threads = max(1, threads)
        self._all: torch.Tensor | None = None
        if len(self.paths) * 3 * size * size <= max_bytes:
            self._all = self._decode(range(len(self.paths)))

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, index: np.ndarray | list[int]) -> torch.Tensor:
        """uint8 (B, 3, S, S) tiles at ``index``."""
        if self._all is not None:
            return self._all[torch.as_tensor(np.asarray(index), dtype=torch.long)]
        return self._decode(index)

    def _decode(self, index: Iterable[int]) -> torch.Tensor:
        idx = [int(i) for i in index]
        out = torch.empty((len(idx), 3, self.size, self.size), dtype=torch.uint8)
        with ThreadPoolExecutor(self.threads) as pool:
            for row, array in enumerate(pool.map(lambda i: decode_image(self.paths[i], self.size), idx)):
                out[row] = torch.from_numpy(array)
        return out


class ReadStore:
    """The ``ImageStore`` interface over tiles a function reads (from slides, say), held when they fit.

    ``read(index)`` returns uint8 RGB tiles ``(B, H, W, 3)`` for the sample indices asked; tiles are resized to
    ``size`` x ``size`` (bicubic, as ``decode_image``) where they differ. Up to ``max_bytes`` the tiles are read
    once, in chunks, and kept, so every epoch after the first waits on the model alone, as with ``ImageStore``;
    above it each batch is read when asked for.
    """

    def __init__(self, count: int, size: int, read: Callable[[np.ndarray], np.ndarray],
                 max_bytes: int = DEFAULT_MAX_BYTES, chunk: int = 512) -> None:
        self.count = count
        self.size = size
        self.read = read
        self._all: torch.Tensor | None = None
        if count * 3 * size * size <= max_bytes:
            self._all = torch.empty((count, 3, size, size), dtype=torch.uint8)
            for start in range(0, count, chunk):
                index = np.arange(start, min(count, start + chunk))
                self._all[start : start + len(index)] = self._load(index)

    def __len__(self) -> int:
        return self.count

    def batch(self, index: np.ndarray | list[int]) -> torch.Tensor:
        """uint8 (B, 3, S, S) tiles at ``index``."""
        if self._all is not None:
            return self._all[torch.as_tensor(np.asarray(index), dtype=torch.long)]
        return self._load(np.asarray(index, np.int64))

    def _load(self, index: np.ndarray) -> torch.Tensor:
        from PIL import Image

        tiles = np.asarray(self.read(np.asarray(index, np.int64)), np.uint8)
        if tiles.shape[1:3] != (self.size, self.size):
            tiles = np.stack([np.asarray(Image.fromarray(t).resize((self.size, self.size), Image.BICUBIC))
                              for t in tiles])
        return torch.from_numpy(np.ascontiguousarray(tiles.transpose(0, 3, 1, 2)))


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 tiles to float in [0, 1]."""
    return batch.float().div_(255.0)

"""Damaged tiles: a tile that does not decode is read again from a coarser level, or left out, and counted.

Real archives hold slides with a few stored tiles that do not decode (a failed copy, a bad sector: "Corrupt
JPEG data"). One such tile must not sink a slide of thousands. ``read_tile_tolerant`` reads a tile; when its
level does not decode there, it reads the same level-0 square from the next coarser level and resamples it to
the tile size (``filled``), and when no level decodes it, it gives a white tile marked ``left out`` (the caller
drops it). A ``TileDamage`` counts both per slide and fails the slide, with its share, once the damaged tiles
pass ``max_share`` of its tiles (our default: ``DEFAULT_MAX_DAMAGED``, 5%): past that the slide is not worth a
prediction, and its row says why.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pathotune_cli.errors import first_line
from pathotune_cli.wsi.reader import WHITE, DamagedSlide, DamagedTile, SlideReader, read_tile

DEFAULT_MAX_DAMAGED = 0.05
"""Our default: a slide with more than 5% of its tiles damaged (filled or left out) fails."""


@dataclass
class TileDamage:
    """The damaged tiles of one slide, counted as they are met (thread-safe); fails the slide past ``max_share``.

    Pass one to ``iter_tile_batches``, ``read_batch`` or ``for_each_tile`` (``damage=``); afterwards ``count`` is
    the slide's ``tiles_damaged`` and ``filled`` / ``left_out`` their level-0 top-left corners.
    """

    name: str = "slide"
    """The slide's file name, for the error line."""
    total: int = 0
    """Tiles the slide has (the share's denominator); 0 never fails."""
    max_share: float | None = DEFAULT_MAX_DAMAGED
    """Share of ``total`` above which the slide fails; None never fails."""
    filled: list[tuple[int, int]] = field(default_factory=list)
    """Tiles read from a coarser level because theirs did not decode."""
    left_out: list[tuple[int, int]] = field(default_factory=list)
    """Tiles no level could decode: white, to be dropped by the caller."""
    first_error: str = ""
    """The first decoder message met, for the error line."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __getstate__(self) -> dict[str, object]:  # a worker process's counter travels back without its lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Damaged tiles so far (filled and left out): the row's ``tiles_damaged``."""
        return len(self.filled) + len(self.left_out)

    def add(self, x: int, y: int, *, filled: bool, error: str = "") -> None:
        """Record one damaged tile at level-0 ``(x, y)``; raises ``DamagedSlide`` once the share is passed."""
        with self._lock:
            (self.filled if filled else self.left_out).append((int(x), int(y)))
            self.first_error = self.first_error or error
        self.check()

    def merge(self, other: TileDamage) -> None:
        """Add what another counter (a worker process's, for one batch) met; raises past the share."""
        with self._lock:
            self.filled += other.filled
            self.left_out += other.left_out
            self.first_error = self.first_error or other.first_error
        self.check()

    def check(self) -> None:
        """Raise ``DamagedSlide`` when more than ``max_share`` of ``total`` tiles are damaged."""
        if self.max_share is None or self.total <= 0 or self.count <= self.max_share * self.total:
            return
        raise DamagedSlide(
            f"{self.name}: {self.count} of {self.total} tiles ({self.count / self.total:.1%}) cannot be decoded, "
            f"above the limit of {self.max_share:.0%} ({self.first_error or 'damaged tile data'})",
            "copy the slide again from the scanner, or raise --max-damaged (the share of its tiles allowed)",
        )


def read_tile_tolerant(
    reader: SlideReader, x0: int, y0: int, level: int, read_size: int, tile_size: int, damage: TileDamage
) -> tuple[np.ndarray, bool]:
    """One tile as ``tiles.read_tile`` reads it, from a coarser level where ``level`` does not decode.

    Returns:
        ``(tile, kept)``: the ``(tile_size, tile_size, 3)`` uint8 tile, and False when no level decoded it
        (the tile is white and recorded as left out).
    """
    try:
        return read_tile(reader, x0, y0, level, read_size, tile_size), True
    except DamagedTile as exc:  # the decoder's own words, not our line around them
        error = first_line(exc.__cause__) if exc.__cause__ is not None else exc.problem
    downsamples = reader.level_downsamples
    for coarser in range(level + 1, reader.levels):
        size = max(1, round(read_size * downsamples[level] / downsamples[coarser]))
        try:
            tile = read_tile(reader, x0, y0, coarser, size, tile_size)
        except DamagedTile:
            continue
        damage.add(x0, y0, filled=True, error=error)
        return tile, True
    damage.add(x0, y0, filled=False, error=error)
    return np.full((tile_size, tile_size, 3), WHITE, np.uint8), False


def write_damage_geojson(path: str | Path, damage: TileDamage, size_level0: int) -> Path:
    """A QuPath GeoJSON marking the damaged tiles: annotations classified ``Damaged (filled)`` or ``(left out)``."""
    from pathotune_cli.files import write_text

    features = []
    for kind, corners in (("Damaged (filled from a coarser level)", damage.filled),
                          ("Damaged (left out)", damage.left_out)):
        for x, y in corners:
            ring = [[x, y], [x + size_level0, y], [x + size_level0, y + size_level0], [x, y + size_level0], [x, y]]
            features.append({
                "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": kind, "color": [200, 0, 0]}},
            })
    return write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))


_JPEG_PADDING = 8
"""Zero bytes a writer may leave after a tile's end-of-image marker (alignment); more is a tile cut short."""


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG tile's scan runs to its end-of-image marker (``FFD9``, then at most zero padding).

    libjpeg only warns about a scan cut short ("premature end of data segment") and pads the tile with grey;
    OpenSlide turns that warning into an error, and so does this check, before decoding. In the entropy-coded
    data every ``FF`` byte is followed by ``00`` or a restart marker, so the first ``FFD9`` after the scan's
    header is the end of the image: one anywhere but at the end (a writer's few bytes of zero padding
    allowed), or none, is a cut.
    """
    scan = _scan_start(data)
    if scan is None:
        return False
    end = data.find(b"\xff\xd9", scan)
    return end >= 0 and len(data) - end - 2 <= _JPEG_PADDING and not data[end + 2 :].strip(b"\x00")


def _scan_start(data: bytes) -> int | None:
    """Where the entropy-coded data of the first scan begins: the marker segments from SOI walked to SOS."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            return pos
    return None

"""Labelled tiles that live inside slides (``labels.csv``) for ``tune`` and ``eval``: listed, split, read on the fly.

``tile --labels`` writes ``labels.csv`` (``wsi.labels_csv``): where each labelled tile is and how to cut it. Here
it becomes the same ``LabelledSet`` a folder of tiles gives, with each tile's slide (or patient) as its group, so
validation takes whole slides; and the store that feeds the model reads the tiles from the slides with the
direct tile decoder, at the recorded level, read size and tile size: no tile image needs to exist on disk.
This module joins ``training`` and ``wsi``, which never import each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.training.data import LabelledSet
    from pathotune_cli.wsi.labels_csv import SlideTiles
    from pathotune_cli.wsi.reader import SlideReader

READ_THREADS = 2
"""Threads reading tiles: the JPEG decoder releases the GIL, so two threads read about twice as fast."""


def discover_data(data: str | Path, task: TaskPreset, warn: Callable[[str], None] | None = None,
                  option: str = "--data") -> LabelledSet:
    """Labelled tiles from a ``labels.csv`` of slide tiles, else from an ImageFolder tree or a tile CSV."""
    from pathotune_cli.training.data import discover
    from pathotune_cli.wsi.labels_csv import is_labels_csv

    if is_labels_csv(data):
        return slide_tiles_set(Path(data), task, option)
    return discover(data, task, warn, option)


def slide_tiles_set(path: Path, task: TaskPreset, option: str = "--data") -> LabelledSet:
    """The tiles of ``labels.csv`` as a ``LabelledSet`` grouped by slide (or by its ``patient`` column).

    Raises:
        BadInput: a bad ``labels.csv`` (``wsi.labels_csv.read_labels_csv``) or a label that is not a class.
    """
    from pathotune_cli.config.schema import class_matcher
    from pathotune_cli.training.data import LabelledSet
    from pathotune_cli.wsi.labels_csv import read_labels_csv

    table = read_labels_csv(path, option)
    match = class_matcher(task)
    labels = np.empty(len(table), np.int64)
    for i, name in enumerate(table.labels):
        index = match(name)
        if index is None:
            raise BadInput(f"{path} line {table.lines[i]}: label '{name}' is not a class of task '{task.name}' "
                           f"(classes: {', '.join(task.class_names)})",
                           "fix the label, or add it as an alias in your task preset")
        labels[i] = index
    slides = [table.slides[int(s)] for s in table.slide_index]
    groups = ([p or str(s) for p, s in zip(table.patients, slides, strict=True)] if table.patients is not None
              else [str(s) for s in slides])
    names = [Path(f"{s}#x{x}_y{y}") for s, (x, y) in zip(slides, table.coords.tolist(), strict=True)]
    return LabelledSet(names, labels, list(table.splits), task.class_names, str(path), [], groups,
                       np.arange(len(table)), table)


def store_for(data: LabelledSet, size: int, **kwargs: Any) -> Any:
    """The store that feeds ``data`` to the model: tiles read from slides, or image files decoded."""
    from pathotune_cli.training.images import ImageStore, ReadStore

    if data.rows is None:
        return ImageStore(data.paths, size, **kwargs)
    reader = SlideTileReader(data.table, data.rows, size)
    try:
        return ReadStore(len(data), size, reader.read, **{k: v for k, v in kwargs.items() if k == "max_bytes"})
    finally:
        reader.close()  # every tile is held now, or a later batch opens its slides again


def data_manifest_rows(split: str, data: LabelledSet) -> list[tuple[Any, ...]]:
    """``slide, x, y, label, split, group`` per tile: the split recorded, slide by slide."""
    table: SlideTiles = data.table
    assert data.rows is not None and data.groups is not None
    return [
        (str(table.slides[int(table.slide_index[r])]), int(table.coords[r, 0]), int(table.coords[r, 1]),
         data.class_names[int(label)], split, group)
        for r, label, group in zip(data.rows.tolist(), data.labels.tolist(), data.groups, strict=True)
    ]


def write_data_manifest(path: Path, train_set: LabelledSet, val_set: LabelledSet | None) -> None:
    """The tiles a run read from slides and the split each went to (``slide, x, y, label, split, group``)."""
    from pathotune_cli.files import write_csv

    rows = data_manifest_rows("train", train_set) + (data_manifest_rows("val", val_set) if val_set else [])
    write_csv(path, ("slide", "x", "y", "label", "split", "group"), rows)


def slide_overlap(prompts: Path, data: LabelledSet) -> str | None:
    """A warning when evaluation tiles are tiles (same slide, x, y) the prompt file was tuned or validated on."""
    import csv

    manifest = Path(prompts).resolve().parent / "data_manifest.csv"
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            seen = {(r.get("slide"), r.get("x"), r.get("y")): r.get("split") or "train" for r in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    keys = [(row[0], str(row[1]), str(row[2])) for row in data_manifest_rows("", data)]
    splits = [seen[k] for k in keys if k in seen]
    if not splits:
        return None
    counts = {s: splits.count(s) for s in ("train", "val") if splits.count(s)}
    which = " and ".join(f"{n} in its {'training' if s == 'train' else 'validation'} data" for s, n in counts.items())
    return (f"{len(splits)} of {len(keys)} evaluation tiles are tiles this prompt file was tuned on ({which}, "
            f"by slide and position in {manifest}): these metrics overstate how it does on new slides")


class SlideTileReader:
    """Reads the tiles of ``labels.csv`` rows from their slides, ``READ_THREADS`` threads, each with its readers.

    Rows are read grouped by slide and geometry, in the order listed (a grid's rows: the reader's row cache then
    decodes each stored tile about once). Each thread keeps its last slides open.
    """

    def __init__(self, table: SlideTiles, rows: np.ndarray, size: int | None = None, threads: int = READ_THREADS,
                 keep_open: int = 4) -> None:
        self.table = table
        self.size = size
        self.rows = np.asarray(rows, np.int64)
        self.threads = max(1, threads)
        self.keep_open = keep_open
        self._local = threading.local()
        self._all: list[dict[int, SlideReader]] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def read(self, index: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S, 3)`` tiles of the samples at ``index``.

        S is ``size`` (tiles of another recorded size are resized, bicubic), or without it the largest one recorded.
        """
        rows = self.rows[np.asarray(index, np.int64)]
        t = self.table
        size = self.size or (int(t.tile_size[rows].max()) if len(rows) else 0)
        out = np.full((len(rows), size, size, 3), 255, np.uint8)
        keys = np.stack([t.slide_index[rows], t.level[rows], t.read_size[rows], t.tile_size[rows]], axis=1)
        jobs = []
        for key in np.unique(keys, axis=0):
            where = np.flatnonzero((keys == key).all(axis=1))
            jobs.extend((key, part) for part in np.array_split(where, min(self.threads, len(where))) if len(part))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="slide-tiles")
        for where, tiles in self._pool.map(lambda job: self._read_job(job[0], job[1], rows, size), jobs):
            out[where] = tiles
        return out

    def close(self) -> None:
        """Stop the threads and close every reader they opened (a later ``read`` starts again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for readers in self._all:
                for reader in readers.values():
                    reader.close()
                readers.clear()
            self._all.clear()

    def _read_job(self, key: np.ndarray, where: np.ndarray, rows: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        from pathotune_cli.wsi.tiles import read_batch

        slide, level, read_size, tile_size = (int(v) for v in key)
        tiles = read_batch(self._reader(slide), self.table.coords[rows[where]], level, read_size, tile_size)
        if tile_size != size:
            tiles = np.stack([np.asarray(Image.fromarray(t).resize((size, size), Image.BICUBIC)) for t in tiles])
        return where, tiles

    def _reader(self, slide: int) -> SlideReader:
        from pathotune_cli.wsi.open import open_slide

        readers: dict[int, SlideReader] | None = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
            with self._lock:
                self._all.append(readers)
        reader = readers.pop(slide, None) or open_slide(self.table.slides[slide])
        readers[slide] = reader  # most recently used last
        while len(readers) > self.keep_open:
            readers.pop(next(iter(readers))).close()
        return reader


def one_group_warning(data: LabelledSet, val_fraction: float) -> str | None:
    """Why tiles from slides have no validation split: they all come from one slide (or one patient)."""
    if data.groups is None or val_fraction <= 0 or len(set(data.groups)) > 1:
        return None
    return (f"every tile of {data.source} comes from one {'patient' if data.table.patients else 'slide'}: no "
            "validation split (validation takes whole slides, never tiles of a training slide); early stopping "
            "and the best epoch follow the training loss; label regions on more slides, or pass --val-data")

"""Read a slide's tiles: streamed in batches for a model, or handed to a function in parallel threads.

``iter_tile_batches`` streams batches with memory flat in slide size, read ahead by worker processes:
each worker opens its own reader once and reads whole batches; the parent keeps at most
``workers * prefetch`` batches in flight and yields them in the order of ``coords``. Workers start with
``spawn`` so a parent that already runs torch threads is never forked.

``for_each_tile`` calls a function on every tile from a few threads (``tile --save-tiles``), where the
work per tile is C code that releases the GIL.

Given a ``TileDamage`` (``damage=``), every reader here tolerates tiles that do not decode: such a tile is read
from a coarser level or left out (``wsi.damage``), each batch marks which (``TileBatch.filled`` /
``left_out``), and the slide fails only past the counter's share. Without one, the first such tile fails the
slide, as before.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import PathotuneError
from pathotune_cli.wsi.damage import TileDamage, read_tile_tolerant
from pathotune_cli.wsi.reader import SlideReader, read_tile


@dataclass(frozen=True)
class TileBatch:
    """A batch of tiles and where they came from."""

    tiles: np.ndarray
    """``(B, tile_size, tile_size, 3)`` uint8 RGB."""
    coords: np.ndarray
    """``(B, 2)`` int64 level-0 top-left x, y."""
    start: int
    """Index of the first tile of the batch in the ``coords`` that were streamed."""
    filled: np.ndarray | None = None
    """``(B,)`` bool: read from a coarser level because its own did not decode (None: no damage counter)."""
    left_out: np.ndarray | None = None
    """``(B,)`` bool: no level decoded it; its pixels are white and the caller drops it (None: no counter)."""

    @property
    def kept(self) -> np.ndarray:
        """``(B,)`` bool: the tiles to use (all but the left-out ones)."""
        return ~self.left_out if self.left_out is not None else np.ones(len(self.coords), bool)


def read_batch(
    reader: SlideReader, coords: np.ndarray, level: int, read_size: int, tile_size: int,
    damage: TileDamage | None = None,
) -> np.ndarray:
    """Tiles at each of ``coords`` as one ``(B, tile_size, tile_size, 3)`` uint8 array.

    With ``damage``, a tile that does not decode is filled from a coarser level or left white and counted
    there (its ``left_out`` corners are the ones to drop); without, it raises ``DamagedTile``.
    """
    out = np.empty((len(coords), tile_size, tile_size, 3), np.uint8)
    for i, (x, y) in enumerate(np.asarray(coords, np.int64).reshape(-1, 2)):
        if damage is None:
            out[i] = read_tile(reader, int(x), int(y), level, read_size, tile_size)
        else:
            out[i] = read_tile_tolerant(reader, int(x), int(y), level, read_size, tile_size, damage)[0]
    return out


def _marked_batch(reader: SlideReader, chunk: np.ndarray, level: int, read_size: int, tile_size: int,
                  tolerant: bool) -> tuple[np.ndarray, TileDamage | None]:
    """A batch and, when ``tolerant``, the damage met in it alone (never failing: the caller's counter judges)."""
    local = TileDamage(max_share=None) if tolerant else None
    return read_batch(reader, chunk, level, read_size, tile_size, local), local


def _masks(chunk: np.ndarray, local: TileDamage | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    if local is None:
        return None, None
    corners = [tuple(c) for c in np.asarray(chunk).tolist()]
    filled, left = set(local.filled), set(local.left_out)
    return np.array([c in filled for c in corners], bool), np.array([c in left for c in corners], bool)


def iter_tile_batches(
    slide: str | Path | SlideReader,
    coords: np.ndarray,
    *,
    level: int,
    read_size: int,
    tile_size: int,
    batch_size: int = 64,
    workers: int = 0,
    prefetch: int = 2,
    backend: str = "auto",
    pool: TileReaderPool | None = None,
    damage: TileDamage | None = None,
) -> Iterator[TileBatch]:
    """Yield the tiles at ``coords`` in batches, in order.

    Args:
        slide: A slide path, or an open reader (its path and backend are reused by the workers).
        coords: ``(N, 2)`` level-0 top-left x, y (e.g. ``SlidePlan.coords`` or ``read_coords(...).coords``).
        level: Level to read from.
        read_size: Pixels of ``level`` per tile side.
        tile_size: Side of the tiles yielded (resized from ``read_size``).
        batch_size: Tiles per batch (the last batch may be smaller).
        workers: Reading processes; 0 reads in this process.
        prefetch: Batches read ahead per worker.
        backend: Reader backend when ``slide`` is a path (see ``open_slide``).
        pool: Reading processes to use (shared across slides); None starts ``workers`` for this slide.
        damage: Counts tiles that do not decode (filled from a coarser level or left out, marked on each
            batch) and fails the slide past its share; None fails it at the first such tile.

    Yields:
        ``TileBatch`` objects; closing the generator early stops the workers.

    Raises:
        PathotuneError: The slide cannot be opened or a region cannot be read (raised in this process
            even when a worker hit it).
    """
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    if workers <= 0 and pool is None:
        yield from _batches_here(slide, coords, level, read_size, tile_size, batch_size, backend, damage)
        return
    if not len(coords):
        return
    if isinstance(slide, SlideReader):
        slide, backend = slide.path, slide.backend
    own_pool = pool is None
    pool = pool if pool is not None else TileReaderPool(workers)
    try:
        yield from _batches_from(pool, Path(slide), coords, level, read_size, tile_size, batch_size, prefetch, backend,
                                 damage)
    finally:
        if own_pool:
            pool.close()


def _batches_here(slide: str | Path | SlideReader, coords: np.ndarray, level: int, read_size: int, tile_size: int,
                  batch_size: int, backend: str, damage: TileDamage | None) -> Iterator[TileBatch]:
    """Batches read in this process, from the reader given or one opened (and closed) here."""
    from pathotune_cli.wsi.open import open_slide

    own = not isinstance(slide, SlideReader)
    reader = open_slide(slide, backend) if own else slide  # type: ignore[arg-type]
    try:
        for start in range(0, len(coords), max(1, batch_size)):
            chunk = coords[start : start + batch_size]
            tiles, local = _marked_batch(reader, chunk, level, read_size, tile_size, damage is not None)
            if damage is not None and local is not None:
                damage.merge(local)
            yield TileBatch(tiles, chunk, start, *_masks(chunk, local))
    finally:
        if own:
            reader.close()


def _batches_from(pool: TileReaderPool, slide: Path, coords: np.ndarray, level: int, read_size: int,
                  tile_size: int, batch_size: int, prefetch: int, backend: str,
                  damage: TileDamage | None) -> Iterator[TileBatch]:
    """Batches read by the pool's processes, ``prefetch`` per worker ahead, yielded in the order of ``coords``."""
    executor = pool.executor
    pending: deque[tuple[int, Future[Any]]] = deque()

    def submit(start: int) -> None:
        chunk = coords[start : start + batch_size]
        pending.append((start, executor.submit(_worker_batch, str(slide), backend, chunk, level, read_size, tile_size,
                                               damage is not None)))

    todo = iter(range(0, len(coords), max(1, batch_size)))
    try:
        for start in todo:
            submit(start)
            if len(pending) >= pool.workers * max(1, prefetch):
                break
        while pending:
            start, future = pending.popleft()
            tiles, local = _unwrap(future.result())
            if damage is not None and local is not None:
                damage.merge(local)
            nxt = next(todo, None)
            if nxt is not None:
                submit(nxt)
            chunk = coords[start : start + len(tiles)]
            yield TileBatch(tiles, chunk, start, *_masks(chunk, local))
    finally:
        for _, future in pending:
            future.cancel()


def for_each_tile(
    slide: str | Path,
    coords: np.ndarray,
    func: Callable[[np.ndarray, int, int], None],
    *,
    level: int,
    read_size: int,
    tile_size: int,
    threads: int = 1,
    backend: str = "auto",
    cancel: threading.Event | None = None,
    damage: TileDamage | None = None,
) -> None:
    """Call ``func(tile, x, y)`` for every tile at ``coords``, spread over ``threads`` threads.

    Threads, not processes: the JPEG codecs and file writes release the GIL, so decoding, encoding and
    writing run in parallel without copying tiles between processes or paying a process start. Each thread
    takes one contiguous band of ``coords`` (a grid's rows, so its reader's row cache decodes each stored
    tile about once) and its own reader, since readers keep a cache; a flat image's reader holds only the
    decoded array and is shared. Calls across threads come in no set order. The first error stops the
    other threads and is raised here (an interrupt first); when ``cancel`` is set, every thread stops at its
    next tile and this returns. Every thread has ended when this returns or raises. ``damage``: see ``_one_tile``.

    Raises:
        PathotuneError: The slide cannot be opened or a tile cannot be read (or whatever ``func`` raised).
    """
    from pathotune_cli.wsi.open import open_slide

    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    bands = [band for band in np.array_split(coords, max(1, min(threads, len(coords)))) if len(band)]
    first = open_slide(slide, backend)
    readers = [first] + [first if first.backend == "image" else None] * (len(bands) - 1)
    stop, errors = threading.Event(), []  # stop: set here on the first error; ``cancel`` is the caller's, only read

    def stopped() -> bool:
        return stop.is_set() or (cancel is not None and cancel.is_set())

    def run(band: np.ndarray, reader: SlideReader | None) -> None:
        own = reader is None
        try:
            reader = open_slide(slide, backend) if reader is None else reader
            try:
                for x, y in band.tolist():
                    if stopped():
                        return
                    _one_tile(reader, x, y, level, read_size, tile_size, func, damage)
            finally:
                if own:
                    reader.close()
        except BaseException as exc:  # handed to the calling thread
            errors.append(exc)
            stop.set()

    pairs = enumerate(zip(bands[1:], readers[1:], strict=True), start=1)
    workers = [threading.Thread(target=run, args=pair, name=f"tiles-{i}", daemon=True) for i, pair in pairs]
    try:
        for worker in workers:
            worker.start()
        if bands:
            run(bands[0], first)
        for worker in workers:
            worker.join()
    except BaseException:  # Ctrl-C here, while reading or waiting: the others stop at their next tile
        stop.set()
        _join_through_interrupts(workers)  # nothing may still write once this raises (the caller deletes its folder)
        raise
    finally:
        first.close()
    if errors:
        raise next((e for e in errors if not isinstance(e, Exception)), errors[0])


def _one_tile(reader: SlideReader, x: int, y: int, level: int, read_size: int, tile_size: int,
              func: Callable[[np.ndarray, int, int], None], damage: TileDamage | None) -> None:
    """``func`` on one tile; with ``damage``, a tile no level decodes is left out (``func`` not called)."""
    if damage is None:
        func(read_tile(reader, x, y, level, read_size, tile_size), x, y)
        return
    tile, kept = read_tile_tolerant(reader, x, y, level, read_size, tile_size, damage)
    if kept:
        func(tile, x, y)


def _join_through_interrupts(threads: list[threading.Thread]) -> None:
    """Wait for every thread to end, even through further Ctrl-C presses."""
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join()
            except KeyboardInterrupt:
                pass


class TileReaderPool:
    """Reading processes shared by many slides: spawned once, each keeping its last slides open.

    ``predict`` over a folder of slides pays the start-up of its workers once, not once per slide.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> TileReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers."""
        self.executor.shutdown(wait=True, cancel_futures=True)


# In a worker process: the slides it read last, kept open (most recently used last).
_worker_readers: dict[tuple[str, str], SlideReader] = {}
_KEEP_OPEN = 2


def _worker_reader(path: str, backend: str) -> SlideReader:
    from pathotune_cli.wsi.open import open_slide

    key = (path, backend)
    reader = _worker_readers.pop(key, None) or open_slide(path, backend)
    _worker_readers[key] = reader  # most recently used last
    while len(_worker_readers) > _KEEP_OPEN:
        _worker_readers.pop(next(iter(_worker_readers))).close()
    return reader


def _worker_batch(path: str, backend: str, coords: np.ndarray, level: int, read_size: int, tile_size: int,
                  tolerant: bool = False) -> Any:
    # errors travel as (class, problem, fix) so the parent raises them with their fix; a batch as [tiles, damage]
    try:
        tiles, local = _marked_batch(_worker_reader(path, backend), coords, level, read_size, tile_size, tolerant)
    except PathotuneError as exc:
        return (type(exc), exc.problem, exc.fix)
    return [tiles, local]


def _unwrap(result: Any) -> tuple[np.ndarray, TileDamage | None]:
    if isinstance(result, tuple):
        cls, problem, fix = result
        raise cls(problem, fix)
    return result[0], result[1]

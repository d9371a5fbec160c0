"""Slide reading: ``pathotune tile --save-tiles jpg`` and predict's reading stage against OpenSlide and the limit.

One generated 20,000 px JPEG-tiled pyramid with tissue in every tile, planned once at 0.5 µm/px and 224 px
(the grid ``tile`` and ``predict`` both cut). Over that same grid:

- **OpenSlide loop** (the CLAM / TRIDENT way): ``OpenSlide.read_region(...).convert("RGB")`` per tile.
- **Raw decode** (the limit): every stored JPEG tile the grid touches, read with ``os.pread`` and decoded once by
  tifffile (``page.decode``); the rate is grid tiles per second of that work, i.e. the time to decode every
  pixel the grid needs exactly once, with no assembly, resize or copy.
- **pathotune tile --save-tiles jpg** (``tile_run``, end to end: plan, tissue mask, overview, coords, and
  every tile written as a JPEG file).
- **predict's reading stage**: ``iter_tile_batches`` over the plan's coords with ``PredictOptions``' defaults
  (64 tiles a batch, 2 worker processes), tiles consumed and dropped.

Fairness: each pathotune figure is compared with baselines run in the same number of reading processes
(``tile`` reads in its own process: 1; predict's stage: 2 workers). Baseline pools are started and have opened
the slide before their clock starts; pathotune's figures include starting their workers and, for ``tile``,
everything else the command does. So the ratios lean towards the baselines.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core import Figure, Timer, info, log

TILE_PX = 224
TARGET_MPP = 0.5
JPEG_QUALITY = 90  # TileConfig's --save-tiles jpg quality, for the OpenSlide + save baseline

# -- worker processes of the baselines ---------------------------------------------------------------------------
_slide: Any = None
_page: Any = None
_fd: int | None = None


def _init_openslide(path: str, barrier: Any) -> None:
    global _slide
    import openslide

    _slide = openslide.OpenSlide(path)
    barrier.wait()


def _openslide_chunk(args: tuple[np.ndarray, int, int]) -> int:
    coords, level, size = args
    n = 0
    for x, y in coords.tolist():
        tile = np.asarray(_slide.read_region((x, y), level, (size, size)).convert("RGB"))
        n += tile.shape[0] > 0
    return n


def _openslide_save_chunk(args: tuple[np.ndarray, int, int, str]) -> int:
    coords, level, size, folder = args
    for x, y in coords.tolist():
        _slide.read_region((x, y), level, (size, size)).convert("RGB").save(
            f"{folder}/x{x}_y{y}.jpg", quality=JPEG_QUALITY
        )
    return len(coords)


def _init_raw(path: str, level: int, barrier: Any) -> None:
    global _page, _fd
    import tifffile

    from pathotune_cli.wsi.tiff_reader import _level_pages

    tif = tifffile.TiffFile(path)
    _page = _level_pages(tif)[level]
    _fd = os.open(path, os.O_RDONLY)
    barrier.wait()


def _raw_chunk(indices: np.ndarray) -> int:
    page, fd = _page, _fd
    offsets, counts, tables = page.dataoffsets, page.databytecounts, page.jpegtables
    n = 0
    for i in indices.tolist():
        decoded, _, _ = page.decode(os.pread(fd, counts[i], offsets[i]), i, jpegtables=tables)
        n += decoded is not None
    return n


def _in_pool(processes: int, init: Any, init_args: tuple, func: Any, chunks: list) -> float:
    """Seconds for ``func`` over ``chunks`` in ``processes`` spawned processes, started and initialised first."""
    if processes <= 1:
        barrier = _NoBarrier()
        init(*init_args, barrier)
        with Timer() as t:
            for chunk in chunks:
                func(chunk)
        return t.seconds
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    with ctx.Pool(processes, initializer=init, initargs=(*init_args, barrier)) as pool:
        barrier.wait(timeout=120)
        with Timer() as t:
            pool.map(func, chunks, chunksize=1)
    return t.seconds


class _NoBarrier:
    def wait(self, timeout: float | None = None) -> None:
        return None


def split(items: np.ndarray, parts: int) -> list[np.ndarray]:
    """Contiguous, nearly equal parts (each process reads its own stretch of rows, as a sharded tiler would)."""
    return [p for p in np.array_split(items, max(1, parts)) if len(p)]


def stored_tiles_for(coords: np.ndarray, read_size: int, page: Any) -> np.ndarray:
    """Indices of the stored tiles a grid touches, in file (row) order, each once."""
    tw, tl = page.tilewidth, page.tilelength
    across = -(-page.imagewidth // tw)
    found: set[int] = set()
    for x, y in np.asarray(coords).tolist():
        for ty in range(y // tl, (y + read_size - 1) // tl + 1):
            for tx in range(x // tw, (x + read_size - 1) // tw + 1):
                found.add(ty * across + tx)
    return np.array(sorted(found), np.int64)


def openslide_loop(path: Path, coords: np.ndarray, level: int, size: int, processes: int) -> float:
    """Tiles per second of the CLAM/TRIDENT loop in ``processes`` processes."""
    chunks = [(c, level, size) for c in split(coords, processes * 4)]
    seconds = _in_pool(processes, _init_openslide, (str(path),), _openslide_chunk, chunks)
    return len(coords) / seconds


def openslide_save_loop(path: Path, coords: np.ndarray, level: int, size: int, folder: Path) -> float:
    """Tiles per second of the same loop that also saves each tile as a JPEG (a tiler that saves), 1 process."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [(c, level, size, str(folder)) for c in split(coords, 4)]
    seconds = _in_pool(1, _init_openslide, (str(path),), _openslide_save_chunk, chunks)
    shutil.rmtree(folder)
    return len(coords) / seconds


def predict_settings() -> tuple[int, int]:
    """(reading workers, batch size) as ``PredictOptions`` defaults them."""
    from pathotune_cli.runs.predict import PredictOptions

    opts = PredictOptions(prompts="", inputs=[])
    workers = opts.workers
    if not isinstance(workers, int):  # "auto": ask predict what it would use on this machine
        from pathotune_cli.hardware import resolve_device
        from pathotune_cli.runs import predict

        workers = predict.reading_workers(workers, resolve_device(opts.device))
    return workers, opts.batch_size


def raw_decode(
    path: Path, coords: np.ndarray, level: int, size: int, processes: int
) -> tuple[float, float, int]:
    """(grid tiles per second, stored tiles per second, stored tiles) of decoding each needed stored tile once."""
    import tifffile

    from pathotune_cli.wsi.tiff_reader import _level_pages

    with tifffile.TiffFile(path) as tif:
        indices = stored_tiles_for(coords, size, _level_pages(tif)[level])
    seconds = _in_pool(processes, _init_raw, (str(path), level), _raw_chunk, split(indices, processes * 4))
    return len(coords) / seconds, len(indices) / seconds, len(indices)


def predict_reading(
    path: Path, coords: np.ndarray, level: int, read_size: int, workers: int, batch: int
) -> float:
    """Tiles per second of ``iter_tile_batches`` as ``predict`` calls it for one slide (its workers start with
    it; batches consumed and dropped)."""
    from pathotune_cli.wsi import iter_tile_batches

    n = 0
    with Timer() as t:
        for batch_ in iter_tile_batches(
            path,
            coords,
            level=level,
            read_size=read_size,
            tile_size=TILE_PX,
            batch_size=batch,
            workers=workers,
            backend="auto",
        ):
            n += len(batch_.tiles)
    assert n == len(coords)
    return n / t.seconds


def file_write_cost(folder: Path, files: int, size: int = 12_000) -> float:
    """Seconds per file to create and write ``files`` files of ``size`` bytes in one new folder of the disk
    ``tile`` writes its tiles to (what the file system alone costs ``tile --save-tiles``)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\xff" * size
    with Timer() as t:
        for i in range(files):
            (folder / f"slide_x{i * 224}_y{i}.jpg").write_bytes(data)
    shutil.rmtree(folder)
    return t.seconds / files


def tile_command(path: Path, out: Path) -> tuple[float, int, float]:
    """(tiles per second, tiles, seconds) of ``pathotune tile --save-tiles jpg`` on one slide, end to end."""
    from pathotune_cli.runs.tile import TileConfig, tile_run

    if out.exists():
        shutil.rmtree(out)
    config = TileConfig(slides=(path,), out=out, target_mpp=TARGET_MPP, tile_size=TILE_PX, save_tiles="jpg")
    with Timer() as t:
        result = tile_run(config)
    row = result.rows[0]
    if row.status != "ok":
        raise RuntimeError(f"tile failed: {row.error}")
    written = sum(1 for _ in (out / f"{path.stem}_tiles").iterdir())
    assert written == row.tiles, (written, row.tiles)
    shutil.rmtree(out / f"{path.stem}_tiles")
    return row.tiles / t.seconds, row.tiles, t.seconds


def same_pixels(path: Path, coords: np.ndarray, level: int, size: int, sample: int = 64) -> int:
    """Max absolute difference between the direct path and OpenSlide on a sample of grid tiles."""
    import openslide

    from pathotune_cli.wsi import open_slide, read_batch

    pick = coords[np.linspace(0, len(coords) - 1, min(sample, len(coords))).astype(int)]
    with open_slide(path) as reader, openslide.OpenSlide(str(path)) as slide:
        ours = read_batch(reader, pick, level, size, size)
        worst = 0
        for tile, (x, y) in zip(ours, pick.tolist(), strict=True):
            theirs = np.asarray(slide.read_region((x, y), level, (size, size)).convert("RGB"))
            worst = max(worst, int(np.abs(tile.astype(np.int16) - theirs).max()))
    return worst


def run(work: Path, quick: bool, seed: int = 0) -> list[Figure]:
    """Every reading figure."""
    from benchmarks.slides import QUALITY, slide_everywhere
    from pathotune_cli.wsi import open_slide, plan_slide

    side = 2_688 if quick else 20_000
    log(f"reading: writing a {side:,} px slide with tissue everywhere")
    slide = slide_everywhere(work / f"everywhere-{side}.tiff", side, seed=seed)
    with Timer() as t:
        plan = plan_slide(slide.path, target_mpp=TARGET_MPP, tile_size=TILE_PX)
    coords, level, read_size = plan.coords, plan.level, plan.read_size
    with open_slide(slide.path) as reader:
        backend = reader.backend
    n = len(coords)
    figures = [
        info(
            "reading.slide",
            "reading",
            f"slide: {side:,} px, {slide.levels} levels, JPEG q{QUALITY} 256 px tiles",
            slide.bytes / 1e6,
            "MB",
            note=f"written in {slide.seconds:.1f} s",
            seconds=slide.seconds,
            side=side,
            levels=slide.levels,
        ),
        info(
            "reading.grid",
            "reading",
            f"grid at {TARGET_MPP} µm/px, {TILE_PX} px (level {level}, read {read_size})",
            n,
            "tiles",
            note=f"of {plan.candidates} candidates; planned in {t.seconds:.1f} s; reader: {backend}",
            candidates=plan.candidates,
            plan_seconds=t.seconds,
            backend=backend,
        ),
    ]
    diff = same_pixels(slide.path, coords, level, read_size)
    figures.append(
        info(
            "reading.max_pixel_diff",
            "reading",
            "direct path vs OpenSlide, max |difference|",
            diff,
            "grey levels",
            note="64 grid tiles; same libjpeg-turbo",
        )
    )

    rates: dict[str, float] = {}
    for procs in (1, 2):
        log(f"reading: OpenSlide loop, {procs} process(es), {n} tiles")
        rates[f"openslide_{procs}"] = openslide_loop(slide.path, coords, level, read_size, procs)
        log(f"reading: raw decode, {procs} process(es)")
        grid_rate, stored_rate, stored = raw_decode(slide.path, coords, level, read_size, procs)
        rates[f"raw_{procs}"] = grid_rate
        rates[f"raw_stored_{procs}"] = stored_rate
    # Each step that writes thousands of files starts with the disk's dirty pages flushed, so none pays
    # for the one before it (on a VM disk, writeback of the last step's 100 MB can triple a step's time).
    log("reading: OpenSlide loop + JPEG save, 1 process")
    os.sync()
    rates["openslide_save_1"] = openslide_save_loop(
        slide.path, coords, level, read_size, work / "openslide-save"
    )
    log("reading: the file system alone (as many files as tile writes)")
    os.sync()
    write_s = file_write_cost(work / "write-cost", n)
    log("reading: pathotune tile --save-tiles jpg")
    os.sync()
    tile_rate, tile_n, tile_s = tile_command(slide.path, work / "tile-out")
    workers, batch = predict_settings()
    procs = max(1, workers)  # workers=0 reads in predict's own process
    log(f"reading: predict's reading stage, {workers} workers, batch {batch}")
    predict_rate = predict_reading(slide.path, coords, level, read_size, workers, batch)

    for key, title in (
        ("openslide_1", "OpenSlide read_region loop, 1 process"),
        ("openslide_2", "OpenSlide read_region loop, 2 processes"),
        ("raw_1", "raw tifffile decode (limit), 1 process"),
        ("raw_2", "raw tifffile decode (limit), 2 processes"),
    ):
        figures.append(info(f"reading.{key}", "reading", title, rates[key], "tiles/s"))
    figures.append(
        info(
            "reading.raw_stored_1",
            "reading",
            "raw decode, stored 256 px tiles, 1 process",
            rates["raw_stored_1"],
            "stored tiles/s",
            note=f"{stored} stored tiles under the grid",
        )
    )
    figures.append(
        info(
            "reading.openslide_save_1",
            "reading",
            "OpenSlide loop + JPEG save, 1 process",
            rates["openslide_save_1"],
            "tiles/s",
            note=f"a tiler that saves tiles; q{JPEG_QUALITY}",
        )
    )
    figures.append(
        info(
            "reading.tile_command",
            "reading",
            "pathotune tile --save-tiles jpg (1 process)",
            tile_rate,
            "tiles/s",
            note=f"{tile_n} tiles in {tile_s:.1f} s, end to end",
        )
    )
    figures.append(
        info(
            "reading.file_write_ms",
            "reading",
            f"file system alone: {n} files of 12 kB, per file",
            write_s * 1e3,
            "ms",
            note=f"{n * write_s:.1f} s in all; tile's whole run {tile_s:.1f} s",
        )
    )
    figures.append(
        info(
            "reading.predict_stage",
            "reading",
            f"predict reading stage ({workers} workers, b{batch})",
            predict_rate,
            "tiles/s",
            workers=workers,
            processes=procs,
        )
    )
    figures.append(
        Figure(
            "reading.tile_vs_openslide_save",
            "reading",
            "tile --save-tiles jpg vs OpenSlide + save",
            tile_rate,
            "tiles/s",
            rates["openslide_save_1"],
            "OpenSlide loop + JPEG save, 1 process",
            note="context: the same work on both sides",
        )
    )
    note = "same number of reading processes"
    figures += [
        Figure(
            "reading.tile_vs_openslide",
            "reading",
            "tile --save-tiles jpg vs OpenSlide loop",
            tile_rate,
            "tiles/s",
            rates["openslide_1"],
            "OpenSlide loop, 1 process",
            4.0,
            note=note,
        ),
        Figure(
            "reading.tile_vs_raw",
            "reading",
            "tile --save-tiles jpg vs raw decode",
            tile_rate,
            "tiles/s",
            rates["raw_1"],
            "raw decode, 1 process",
            0.5,
            note=note,
        ),
        Figure(
            "reading.predict_vs_openslide",
            "reading",
            "predict reading vs OpenSlide loop",
            predict_rate,
            "tiles/s",
            rates[f"openslide_{procs}"],
            f"OpenSlide loop, {procs} process(es)",
            4.0,
            note=note,
        ),
        Figure(
            "reading.predict_vs_raw",
            "reading",
            "predict reading vs raw decode",
            predict_rate,
            "tiles/s",
            rates[f"raw_{procs}"],
            f"raw decode, {procs} process(es)",
            0.5,
            note=note,
        ),
    ]
    return figures

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

Fairness: predict's reading stage is compared with baselines run in the same number of reading processes
(its default on a CPU: reading in its own process, so 1). ``tile`` is judged as the issue states it, against
one OpenSlide loop and one raw decode, while it spreads its slide over as many threads as the machine has
CPUs (2 here); the same figures against 2-process baselines are printed beside them as context. Baseline
pools are started and have opened the slide before their clock starts; pathotune's figures include starting
their workers and, for ``tile``, everything else the command does (planning, tissue mask, overview, coords,
and writing every tile as a file, which no baseline does).

The disk: on an ext4 file system without a journal (this machine's), creating a file right after thousands
were deleted costs ten times as much for some minutes (see ``fresh_folder``). Nothing is deleted during the
run, and the steps that write files first wait, up to four minutes, until creating a file costs what it
should (``wait_for_file_system``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core import Figure, Timer, info, interleaved, log

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


def fresh_folder(parent: Path, name: str) -> Path:
    """A folder of ``parent`` that does not exist yet, for a step that writes thousands of files.

    Nothing is deleted until the benchmark ends: on an ext4 file system without a journal (this machine's)
    the kernel skips inodes freed in the last minutes when it creates a file, one by one, so writing 7,921
    files right after deleting as many cost 0.45 ms a file instead of 0.04 (perf: ``recently_deleted``).
    """
    for i in range(1000):
        folder = parent / (name if i == 0 else f"{name}-{i}")
        if not folder.exists():
            return folder
    raise RuntimeError(f"no free folder name for {name} in {parent}")


def wait_for_file_system(work: Path, limit_s: float = 240.0, good_ms: float = 0.12) -> float:
    """Milliseconds to create a small file, once that is below ``good_ms`` or ``limit_s`` has passed.

    Each probe creates 500 files in a fresh folder (kept until the run ends, like every other).
    """
    start = time.perf_counter()
    while True:
        ms = file_write_cost(fresh_folder(work, "probe"), 500, size=12_000) * 1e3
        waited = time.perf_counter() - start
        if ms <= good_ms or waited >= limit_s:
            return ms
        log(f"reading: creating a file costs {ms:.2f} ms (files were deleted recently?); waiting ({waited:.0f} s)")
        time.sleep(20)


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
    return len(coords) / seconds  # the files stay until the run ends: see fresh_folder


def predict_settings() -> tuple[int, int]:
    """(reading workers, batch size) as ``PredictOptions`` defaults them."""
    from pathotune_cli.runs.predict import PredictOptions

    opts = PredictOptions(prompts=Path("defaults"), inputs=(Path("defaults"),))
    workers = opts.workers
    if not isinstance(workers, int):  # "auto": ask predict what it would use on this machine
        from pathotune_cli.hardware import resolve_device
        from pathotune_cli.runs.tile_level.predict import reading_workers

        workers = reading_workers(workers, resolve_device(opts.device))
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
    return t.seconds / files


def tile_command(path: Path, out: Path) -> tuple[float, int, float]:
    """(tiles per second, tiles, seconds) of ``pathotune tile --save-tiles jpg`` on one slide, end to end."""
    from pathotune_cli.runs.tile import TileConfig, tile_run

    config = TileConfig(slides=(path,), out=out, target_mpp=TARGET_MPP, tile_size=TILE_PX, save_tiles="jpg")
    with Timer() as t:
        result = tile_run(config)
    row = result.rows[0]
    if row.status != "ok":
        raise RuntimeError(f"tile failed: {row.error}")
    written = sum(1 for _ in (out / f"{path.stem}_tiles").iterdir())
    assert written == row.tiles, (written, row.tiles)
    return row.tiles / t.seconds, row.tiles, t.seconds


HS2P_BACKENDS = ("tifffile", "openslide")
"""hs2p's readers that need nothing beyond ``hs2p[openslide,tifffile]``; the faster one is the baseline."""


def hs2p_python() -> str | None:
    """An interpreter with hs2p: ``$PATHOTUNE_HS2P_PYTHON``, this one, or ``.venv-hs2p`` (``make bench``)."""
    import importlib.util
    import sys

    if os.environ.get("PATHOTUNE_HS2P_PYTHON"):
        return os.environ["PATHOTUNE_HS2P_PYTHON"]
    if importlib.util.find_spec("hs2p") is not None:
        return sys.executable
    venv = Path(__file__).resolve().parents[1] / ".venv-hs2p" / "bin" / "python"
    return str(venv) if venv.is_file() else None


def hs2p_tile(python: str, path: Path, out: Path, backend: str, workers: int) -> tuple[float, int, float]:
    """(tiles per second, tiles, seconds) of hs2p saving every tile of ``path`` with ``workers`` workers."""
    import json
    import subprocess

    script = Path(__file__).resolve().parent / "peers" / "hs2p_tile.py"
    done = subprocess.run([python, str(script), str(path), str(out), backend, str(workers), str(TARGET_MPP),
                           str(TILE_PX)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"hs2p ({backend}) failed: {done.stderr.strip().splitlines()[-3:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return row["tiles"] / row["seconds"], row["tiles"], row["seconds"]


def hs2p_figures(tile_rate: float, threads: int, saving: Any, backend: str | None, probe: dict, runs: list,
                 peer: str | None) -> list[Figure]:
    """tile against hs2p (judged), and hs2p's rate with each reader (context)."""
    figures = []
    for name in HS2P_BACKENDS:
        rate, tiles, seconds = probe.get(name, (None, 0, 0.0))
        figures.append(info(f"reading.hs2p_{name}", "reading", f"hs2p 6.1 saving tiles, {name} reader, "
                            f"{threads} workers", rate, "tiles/s",
                            note=f"{tiles} tiles in {seconds:.1f} s (one run)" if rate else "not measured"))
    if backend is None:
        return [*figures, Figure("reading.tile_vs_hs2p", "reading", "tile --save-tiles jpg vs hs2p 6.1", tile_rate,
                                 "tiles/s", None, "hs2p", 4.0,
                                 note="not measured: hs2p is not installed (make bench, or "
                                      "PATHOTUNE_HS2P_PYTHON=an interpreter with hs2p[openslide,tifffile]==6.1.0)")]
    best = max(runs)
    return [*figures, Figure(
        "reading.tile_vs_hs2p", "reading", "tile --save-tiles jpg vs hs2p 6.1", tile_rate, "tiles/s",
        saving.best("hs2p"), f"hs2p {backend} reader, {threads} workers, saving every tile", 4.0,
        note=f"same slide and worker count; hs2p {best[1]} tiles in {best[2]:.1f} s; interleaved, "
             f"drift {saving.drift('tile', 'hs2p'):.0%}",
        extra={"backend": backend, "python": peer, **saving.to_dict()})]


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

    # Every rate is the best of a few runs, on both sides (timeit's rule: noise only ever slows a run down).
    repeats = 1 if quick else 2
    rates: dict[str, float] = {}
    for procs in (1, 2):
        log(f"reading: OpenSlide loop, {procs} process(es), {n} tiles, best of {repeats}")
        rates[f"openslide_{procs}"] = max(
            openslide_loop(slide.path, coords, level, read_size, procs) for _ in range(repeats)
        )
        log(f"reading: raw decode, {procs} process(es), best of {repeats}")
        grid_rate, stored_rate, stored = max(
            raw_decode(slide.path, coords, level, read_size, procs) for _ in range(repeats)
        )
        rates[f"raw_{procs}"] = grid_rate
        rates[f"raw_stored_{procs}"] = stored_rate
    # The steps that write thousands of files: tile first, on a disk that has just shown it creates files at
    # its usual cost; each starts with the dirty pages of the one before flushed (on a VM disk, writeback of
    # the last step's 100 MB can triple a step's time).
    log("reading: checking that the file system creates files at its usual cost")
    probe_ms = wait_for_file_system(work, limit_s=0.0 if quick else 240.0)
    from pathotune_cli.runs.tile import save_threads_for

    tile_threads = save_threads_for(1)
    peer = hs2p_python()
    hs2p_backend, hs2p_probe = None, {}
    if peer is not None:
        for backend in HS2P_BACKENDS:  # its fastest reader is the baseline: a slow peer flatters nobody
            log(f"reading: hs2p 6.1 with its {backend} reader, {tile_threads} workers (which reader is faster)")
            os.sync()
            hs2p_probe[backend] = hs2p_tile(peer, slide.path, fresh_folder(work, f"hs2p-{backend}"), backend,
                                            tile_threads)
        hs2p_backend = max(hs2p_probe, key=lambda b: hs2p_probe[b][0])
    rounds = 1 if quick else 2
    log(f"reading: tile --save-tiles jpg ({tile_threads} threads), OpenSlide loop + save (1 process)"
        + (f", hs2p ({hs2p_backend})" if hs2p_backend else "") + f": {rounds} interleaved rounds")
    tile_runs, save_runs, hs2p_runs = [], [], []

    def tile_side() -> float:
        os.sync()
        tile_runs.append(tile_command(slide.path, fresh_folder(work, "tile-out")))
        return tile_runs[-1][0]

    def save_side() -> float:
        os.sync()
        save_runs.append(openslide_save_loop(slide.path, coords, level, read_size,
                                             fresh_folder(work, "openslide-save")))
        return save_runs[-1]

    def hs2p_side() -> float:
        os.sync()
        hs2p_runs.append(hs2p_tile(peer, slide.path, fresh_folder(work, "hs2p"), hs2p_backend, tile_threads))
        return hs2p_runs[-1][0]

    sides = {"tile": tile_side, "openslide_save": save_side} | ({"hs2p": hs2p_side} if hs2p_backend else {})
    saving = interleaved(sides, rounds, pairs=[("tile", other) for other in sides if other != "tile"],
                         extra_passes=0 if quick else 1)
    tile_rate, tile_n, tile_s = max(tile_runs)
    rates["openslide_save_1"] = saving.best("openslide_save")
    log("reading: the file system alone (as many files as tile writes)")
    os.sync()
    write_s = file_write_cost(fresh_folder(work, "write-cost"), n)
    workers, batch = predict_settings()
    procs = max(1, workers)  # workers=0 reads in predict's own process
    log(f"reading: predict's reading stage, {workers} workers, batch {batch}, best of {repeats}")
    predict_rate = max(
        predict_reading(slide.path, coords, level, read_size, workers, batch) for _ in range(repeats)
    )

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
            f"pathotune tile --save-tiles jpg ({tile_threads} threads)",
            tile_rate,
            "tiles/s",
            note=f"{tile_n} tiles in {tile_s:.1f} s, end to end; runs {[round(r[2], 2) for r in tile_runs]} s",
            threads=tile_threads,
        )
    )
    figures.append(
        info(
            "reading.file_probe_ms",
            "reading",
            "file system before the writing steps: 500 files, per file",
            probe_ms,
            "ms",
            note="0.03-0.05 ms when healthy; ~0.45 ms for minutes after mass deletion",
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
            4.0,
            note=f"the same work on both sides; interleaved, drift {saving.drift('tile', 'openslide_save'):.0%}",
            extra=saving.to_dict(),
        )
    )
    figures += hs2p_figures(tile_rate, tile_threads, saving, hs2p_backend, hs2p_probe, hs2p_runs, peer)
    for key, title in (("openslide_2", "OpenSlide loop, 2 processes"), ("raw_2", "raw decode, 2 processes")):
        figures.append(
            Figure(
                f"reading.tile_vs_{key}",
                "reading",
                f"tile --save-tiles jpg vs {title}",
                tile_rate,
                "tiles/s",
                rates[key],
                title,
                note=f"context: tile's {tile_threads} threads against 2 processes",
            )
        )
    note = "same number of reading processes"
    tile_note = f"tile: {tile_threads} threads, as the issue states the baselines: 1 process"
    figures += [
        Figure(
            "reading.tile_vs_openslide",
            "reading",
            "tile --save-tiles jpg vs OpenSlide loop",
            tile_rate,
            "tiles/s",
            rates["openslide_1"],
            "OpenSlide loop, 1 process",
            note="context: a read-only loop does less work than tile; " + tile_note,
        ),
        Figure(
            "reading.tile_vs_raw",
            "reading",
            "tile --save-tiles jpg vs raw decode",
            tile_rate,
            "tiles/s",
            rates["raw_1"],
            "raw decode, 1 process",
            note="context: decoding alone, nothing encoded or saved; " + tile_note,
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

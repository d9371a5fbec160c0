"""``pathotune tile`` as a plain function: cut slides into tile coordinates at a physical resolution.

Per slide it writes ``<stem>.h5`` (coords + attributes), ``<stem>.tissue.geojson``, ``<stem>.thumb.png`` and,
if asked, ``<stem>_tiles/``; each under a temporary name first, with the ``.h5`` renamed last, so a slide
whose ``.h5`` exists is finished. ``manifest.csv`` lists every slide with its status and is rewritten after
each one (slides not done yet listed ``pending``; by a shard: when it ends, ``runs.merge``). A slide that fails
gets its one-line error in the manifest and the others go on. A slide is worked on, and ``--resume`` decides
whether to keep it, under its lock (``runs.locks``); one another process holds is skipped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput, describe
from pathotune_cli.events import Reporter, SlideDone, SlidesStarted, ignore, note
from pathotune_cli.files import Staging, prepare_output_folder, remove_stale_temporaries
from pathotune_cli.formats import TILE_COMMAND_SUFFIXES as TILED_SUFFIXES
from pathotune_cli.runs.options import coerce_paths
from pathotune_cli.runs.per_slide.inputs import check_tissue_geojson, geojson_for, read_slides_csv
from pathotune_cli.runs.per_slide.locks import clear_stale, lock_path, slide_lock
from pathotune_cli.runs.per_slide.merge import rebuild_summary, write_summary_rows
from pathotune_cli.runs.per_slide.resume import (
    Decision,
    SlideKey,
    decide,
    file_digest,
    folder_rows,
    input_identity,
    record_failure,
    record_path,
    write_record,
)
from pathotune_cli.runs.records import write_slides_record

COMMAND = "tile"
"""Names the per-slide records: ``<stem>.tile.json``."""
TILE_ALGORITHM = 1
"""Bumped when a change of pathotune cuts other tiles from the same slide and settings, so resumes redo them."""
TILE_FORMATS = ("png", "jpg")


@dataclass(frozen=True)
class TileConfig:
    """Settings of one ``tile`` run (the CLI builds it; Python callers may too)."""

    slides: tuple[Path, ...] = ()
    """Slide files and folders (a folder contributes its slide files, not recursively)."""
    out: Path = Path("tiles")
    """Output folder."""
    slides_csv: Path | None = None
    """CSV with a ``slide`` column (paths relative to the CSV's folder) and an optional ``mpp`` column."""
    target_mpp: float | None = 0.5
    """Target microns per pixel; exactly one of ``target_mpp`` and ``mag``."""
    mag: float | None = None
    """Target magnification."""
    tile_size: int = 224
    """Tile side at the target resolution, in pixels."""
    overlap: int = 0
    """Overlap between neighbouring tiles, in target pixels."""
    min_tissue: float = 0.25
    """Tissue fraction a tile needs to be kept."""
    tissue: str = "otsu"
    """``otsu`` or ``none``."""
    tissue_geojson: Path | None = None
    """QuPath GeoJSON of tissue polygons (one slide), or a folder of ``<stem>.geojson`` files."""
    default_mpp: float | None = None
    """mpp for slides whose metadata and CSV row give none."""
    save_tiles: str | None = None
    """Also write the tile images, ``png`` or ``jpg``."""
    workers: int = 1
    """Slides processed in parallel (processes); 0 or 1 works in this process."""
    save_threads: int = 0
    """Threads that read, encode and write one slide's tile images; 0: the CPUs this process may use,
    shared among the ``workers``."""
    resume: bool = False
    """Keep slides finished earlier from the same file with the same settings (``runs.resume``)."""
    backend: str = "auto"
    """Slide reader (see ``wsi.open_slide``)."""
    shard: Shard = WHOLE
    """Which slides this process takes (``cluster.Shard``, or ``"I/N"``): every N-th from I, sorted by path."""

    def __post_init__(self) -> None:
        """Check the rules that span fields."""
        coerce_paths(self)
        if (self.target_mpp is None) == (self.mag is None):
            raise BadInput("give either a target mpp or a magnification, not both", "use --mpp or --mag")
        if not 0 <= self.overlap < self.tile_size:
            raise BadInput(
                f"--overlap {self.overlap} must be at least 0 and below --tile-size {self.tile_size}"
            )
        if not 0.0 <= self.min_tissue <= 1.0:
            raise BadInput(f"--min-tissue {self.min_tissue} must lie between 0 and 1")
        if self.save_tiles is not None and self.save_tiles not in TILE_FORMATS:
            raise BadInput(f"--save-tiles {self.save_tiles!r} is not a tile format", "use png or jpg")
        if not self.slides and self.slides_csv is None:
            raise BadInput("no slides given", "pass slide files or folders, or --slides-csv FILE")


@dataclass
class SlideRow:
    """One line of ``manifest.csv``."""

    slide: str
    status: str  # ok, failed, locked (another process is on it), or pending (in the manifest: runs.merge)
    tiles: int = 0
    level: int | None = None
    mpp: float | None = None
    mpp_source: str = ""
    seconds: float = 0.0
    error: str = ""
    resume: str = ""
    """With ``--resume``: ``kept``, or ``redone (why)``."""
    notes: tuple[str, ...] = ()
    """Warnings for the user (a slide with no tiles, a CSV mpp far from the file's); stderr, not the manifest."""

    def to_record(self) -> dict[str, Any]:
        """The row as stored in the slide's record (and read back into a row by ``from_record``)."""
        values = asdict(self)
        values.pop("notes")
        values.pop("resume")
        return values

    def to_summary(self) -> dict[str, Any]:
        """The row as the manifest shows it: the record's values and this run's resume word."""
        return {**self.to_record(), "resume": self.resume}

    @classmethod
    def from_record(cls, row: dict[str, Any], resume: str = "") -> SlideRow:
        """A row from a slide's record; unknown keys (from another version) are left out."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("notes", "resume")}
        return cls(**{k: v for k, v in row.items() if k in names}, resume=resume)


@dataclass
class TileResult:
    """What a ``tile`` run did."""

    out: Path
    manifest: Path
    rows: list[SlideRow] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Slides that failed."""
        return sum(r.status == "failed" for r in self.rows)

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The run as plain data (for ``--json``)."""
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "ok": sum(r.status == "ok" for r in self.rows),
            "kept": sum(r.resume == "kept" for r in self.rows),
            "failed": self.failed,
            "slides": [asdict(r) for r in self.rows],
        }


def collect_slides(config: TileConfig) -> list[tuple[Path, float | None]]:
    """Every slide of the run with its CSV mpp (or None), in the order given.

    Raises:
        BadInput: A path given on the command line is missing, a folder holds no slides, the CSV is
            malformed, or two slides would write the same output names.
    """
    items: list[tuple[Path, float | None]] = []
    for path in config.slides:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TILED_SUFFIXES)
            if not found:
                suffixes = ", ".join(sorted(TILED_SUFFIXES))
                raise BadInput(f"{path}: no slide files in this folder", f"slides end in {suffixes}")
            items += [(p, None) for p in found]
        elif path.exists():
            items.append((path, None))
        else:
            raise BadInput(f"{path}: no such file or folder", "check the path")
    if config.slides_csv is not None:
        items += read_slides_csv(config.slides_csv)
    stems: dict[str, Path] = {}
    for path, _ in items:
        other = stems.setdefault(path.stem, path)
        if other != path:
            raise BadInput(
                f"two slides share the name {path.stem!r} ({other} and {path})",
                "rename one, or tile them into different --out folders",
            )
    return items


def tile_run(config: TileConfig, report: Reporter = ignore) -> TileResult:
    """Tile every slide of ``config`` (of its shard); a failing slide is recorded and the others go on.

    Args:
        config: The run's settings.
        report: Receives ``SlidesStarted`` once, then ``SlideDone`` after each slide.

    Returns:
        A ``TileResult`` with one row per slide of this run, in input order. ``manifest.csv`` lists every slide
        recorded in the folder (earlier runs' and other shards' too), sorted by path.
    """
    started = time.time()
    everything = collect_slides(config)
    items = config.shard.take(everything, key=lambda item: str(item[0]))
    check_tissue_geojson([p for p, _ in items], config.tissue_geojson)
    out = prepare_output_folder(config.out, "--out")
    remove_stale_temporaries(out)
    settings = {k: [str(p) for p in v] if k == "slides" else (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(config).items()}
    write_slides_record(out, COMMAND, config.shard, [p for p, _ in everything], settings, started, "running")
    if not config.shard.whole:
        note(report, f"shard {config.shard.label} ({config.shard.source}): {len(items)} of {len(everything)} slides")
    result = TileResult(out=out, manifest=out / "manifest.csv")
    others = {Path(r["slide"]).stem: SlideRow.from_record(r) for r in folder_rows(out, COMMAND)}
    rows: dict[int, SlideRow] = {}

    def finish(index: int, row: SlideRow) -> None:
        rows[index] = row
        result.rows = [rows[i] for i in sorted(rows)]
        if config.shard.whole:  # a shard rebuilds the folder's manifest when it ends, under its lock
            write_manifest(result.manifest, _manifest_so_far(items, rows, others))
        name = Path(row.slide).name
        error = row.error if name in row.error else f"{name}: {row.error}"
        detail = error if row.status in ("failed", "locked") else (row.resume or f"{row.tiles} tiles")
        report(SlideDone(Path(row.slide).name, row.status, len(rows), len(items), detail, row.notes, row.seconds))

    report(SlidesStarted(len(items)))
    todo = []
    for index, (path, csv_mpp) in enumerate(items):
        kept = kept_row(path, csv_mpp, config, report) if config.resume else None
        if kept is not None:  # kept here, so no worker process starts for it
            finish(index, kept)
        else:
            todo.append((index, path, csv_mpp))
    if config.workers > 1 and len(todo) > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(config.workers, len(todo)), mp_context=context) as pool:
            futures = {pool.submit(tile_one, path, csv_mpp, config): index for index, path, csv_mpp in todo}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    row = future.result()
                except Exception as exc:  # a worker that died (e.g. a crash in a codec)
                    path = items[index][0]
                    died = type(exc).__name__
                    error = f"{path.name}: its worker process died ({died}); rerun with --workers 1"
                    row = _record_failure(path, items[index][1], config, SlideRow(str(path), "failed", error=error))
                    clear_stale(lock_path(out, path.stem, COMMAND))
                finish(index, row)
    else:
        for index, path, csv_mpp in todo:
            finish(index, tile_one(path, csv_mpp, config))
    result.rows = [rows[i] for i in sorted(rows)]
    rebuild_summary(out, COMMAND, [r.to_summary() for r in result.rows], report=report)
    write_slides_record(out, COMMAND, config.shard, [p for p, _ in everything], settings, started, "finished",
                        slides=len(result.rows), failed=result.failed)
    return result


def slide_key(path: Path, csv_mpp: float | None, config: TileConfig) -> SlideKey:
    """Everything a slide's tiles depend on: the file, and every setting that changes them."""
    return SlideKey(
        input=input_identity(path),
        settings={
            "version": TILE_ALGORITHM,
            "target_mpp": config.target_mpp,
            "mag": config.mag,
            "tile_size": config.tile_size,
            "overlap": config.overlap,
            "min_tissue": config.min_tissue,
            "tissue": config.tissue,
            "tissue_geojson": file_digest(geojson_for(path, config.tissue_geojson)),
            "csv_mpp": csv_mpp,
            "default_mpp": config.default_mpp,
            "save_tiles": config.save_tiles,
            "reader": config.backend,
        },
    )


def decide_slide(path: Path, csv_mpp: float | None, config: TileConfig) -> Decision:
    """Whether ``--resume`` keeps this slide's earlier tiles (and the summary's word for it)."""
    if not path.is_file():
        return Decision(False, "redone (the slide is missing)")
    paths = output_paths(Path(config.out), path.stem)
    outputs = [paths["h5"], paths["geojson"], paths["thumb"]] + ([paths["tiles"]] if config.save_tiles else [])
    return decide(Path(config.out), path.stem, COMMAND, slide_key(path, csv_mpp, config), outputs)


def kept_row(path: Path, csv_mpp: float | None, config: TileConfig, report: Reporter = ignore) -> SlideRow | None:
    """The slide's row if ``--resume`` keeps it, decided under its lock; None when it is to be done (or is locked).

    ``tile_one`` decides again under its own lock: the slide may change hands in between.

    Args:
        path: The slide.
        csv_mpp: Its mpp from ``--slides-csv``, or None.
        config: The run's settings.
        report: Told when a stale lock was taken over.
    """
    with slide_lock(Path(config.out), path.stem, COMMAND) as claim:
        if not claim.held:
            return None
        if claim.taken_over:
            note(report, claim.taken_over)
        decision = decide_slide(path, csv_mpp, config)
        return SlideRow.from_record(decision.row, resume="kept") if decision.keep else None


def tile_one(path: Path, csv_mpp: float | None, config: TileConfig) -> SlideRow:
    """One slide under its lock (``runs.locks``): kept (``--resume``, decided under the lock), tiled, or ``locked``.

    Deciding under the lock means a slide another process finished since this run looked at it is kept, not redone.
    """
    with slide_lock(Path(config.out), path.stem, COMMAND) as claim:
        if not claim.held:
            owner = claim.owner.describe() if claim.owner else "another process"
            return SlideRow(str(path), "locked", error=f"{path.name}: in progress in another process ({owner})")
        decision = decide_slide(path, csv_mpp, config) if config.resume else None
        if decision is not None and decision.keep:
            return SlideRow.from_record(decision.row, resume="kept")
        row = _tile_one(path, csv_mpp, config, decision.resume if decision else "")
        if claim.taken_over:
            row.notes = (claim.taken_over, *row.notes)
        return row


def _tile_one(path: Path, csv_mpp: float | None, config: TileConfig, resume: str = "") -> SlideRow:
    """Plan and write one slide's outputs, then its record; never raises for a bad slide (the row says why).

    The outputs are written under temporary names, the old record is removed, the outputs are renamed into
    place and the new record is written last: a slide whose record says ``ok`` has exactly those outputs.
    """
    from pathotune_cli.wsi.plan import plan_slide

    start = time.perf_counter()
    out = Path(config.out)
    try:
        key = slide_key(path, csv_mpp, config)
        plan = plan_slide(
            path,
            target_mpp=config.target_mpp,
            mag=config.mag,
            tile_size=config.tile_size,
            overlap=config.overlap,
            min_tissue=config.min_tissue,
            tissue=config.tissue,
            tissue_geojson=geojson_for(path, config.tissue_geojson),
            mpp_override=csv_mpp,
            default_mpp=config.default_mpp,
            backend=config.backend,
        )
        with Staging() as staged:  # whatever is not renamed when this block ends (an error, Ctrl-C) is removed
            _write_outputs(plan, out, config, staged)
            record_path(out, path.stem, COMMAND).unlink(missing_ok=True)
            staged.commit()
        notes = (*plan.notes, *([] if len(plan.coords) else [_why_no_tiles(plan, config)]))
        row = SlideRow(
            slide=str(path),
            status="ok",
            tiles=len(plan.coords),
            level=plan.level,
            mpp=round(plan.mpp, 6),
            mpp_source=plan.mpp_source,
            seconds=round(time.perf_counter() - start, 2),
            resume=resume,
            notes=notes,
        )
        write_record(out, path.stem, COMMAND, key, row.to_record())
        return row
    except Exception as exc:  # one broken slide must not stop the run
        error = describe(exc, out)[1]
    failed = SlideRow(str(path), "failed", seconds=round(time.perf_counter() - start, 2), error=error, resume=resume)
    return _record_failure(path, csv_mpp, config, failed)


def _record_failure(path: Path, csv_mpp: float | None, config: TileConfig, row: SlideRow) -> SlideRow:
    out = Path(config.out)
    outputs = output_paths(out, path.stem).values()
    record_failure(out, path.stem, COMMAND, outputs, lambda: slide_key(path, csv_mpp, config), row.to_record())
    return row


def _manifest_so_far(items: Sequence[tuple[Path, Any]], done: dict[int, SlideRow],
                     others: dict[str, SlideRow]) -> list[SlideRow]:
    """A whole run's manifest between slides: this run's rows over the folder's records, the rest ``pending``."""
    waiting = {p.stem: SlideRow(str(p), "pending") for i, (p, _) in enumerate(items) if i not in done}
    return list({**waiting, **others, **{Path(r.slide).stem: r for r in done.values()}}.values())


def write_manifest(path: Path, rows: Sequence[SlideRow]) -> None:
    """Write ``manifest.csv`` atomically, one line per slide, sorted by slide path."""
    write_summary_rows(path.parent, COMMAND, [r.to_summary() for r in rows])


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    """Where one slide's outputs go."""
    return {
        "h5": out / f"{stem}.h5",
        "geojson": out / f"{stem}.tissue.geojson",
        "thumb": out / f"{stem}.thumb.png",
        "tiles": out / f"{stem}_tiles",
    }


def _write_outputs(plan: Any, out: Path, config: TileConfig, staged: Staging) -> None:
    """Every output of a slide under a temporary name, staged so the ``.h5`` is renamed last."""
    from pathotune_cli.wsi.coords_file import write_coords
    from pathotune_cli.wsi.geojson import write_tissue_geojson
    from pathotune_cli.wsi.thumbnail import draw_overview, save_png

    paths = output_paths(out, plan.path.stem)
    keys = (["tiles"] if config.save_tiles else []) + ["geojson", "thumb", "h5"]
    temps = {key: staged.temp(paths[key]) for key in keys}  # in rename order, before any thread starts

    def small_outputs() -> None:
        picture = draw_overview(
            plan.thumbnail, plan.level0_size, polygons=plan.polygons, coords=plan.coords,
            size_level0=plan.grid.patch_size_level0,
        )
        write_tissue_geojson(temps["geojson"], plan.polygons)
        save_png(temps["thumb"], picture)
        write_coords(temps["h5"], plan.coords, plan.h5_attrs())

    if not config.save_tiles:
        small_outputs()
        return
    from concurrent.futures import ThreadPoolExecutor

    threads = config.save_threads or save_threads_for(config.workers)
    failed = threading.Event()  # the pictures and files failed: stop saving tiles for nothing
    with ThreadPoolExecutor(max_workers=1) as pool:  # the pictures and files take shape while tiles are saved
        small = pool.submit(small_outputs)
        small.add_done_callback(lambda done: failed.set() if done.exception() is not None else None)
        _save_tiles(plan, temps["tiles"], config.save_tiles, threads, failed)
        small.result()


def _save_tiles(plan: Any, folder: Path, fmt: str, threads: int, cancel: threading.Event | None = None) -> Path:
    """Write every tile of ``plan`` as ``<stem>_x<x>_y<y>.<fmt>`` into ``folder``, from ``threads`` threads.

    Reading, encoding and writing a tile are C calls that release the GIL, so two threads on two cores
    save 1.8x as many tiles per second as one (benchmarks, issue 6). The files are the same bytes
    whatever the number of threads.
    """
    import imagecodecs
    from PIL import Image

    from pathotune_cli.wsi.tiles import for_each_tile

    folder.mkdir(parents=True, exist_ok=True)
    stem = plan.path.stem

    def save(tile: Any, x: int, y: int) -> None:
        path = os.path.join(folder, f"{stem}_x{x}_y{y}.{fmt}")
        if fmt == "jpg":
            # libjpeg-turbo straight from the array: the same bytes as Pillow's quality=90 (4:2:0), without
            # Pillow's per-image set-up, which cost as much as the encoding itself; written with three system
            # calls where a Python file object makes six (benchmarks, issue 6)
            data = memoryview(imagecodecs.jpeg_encode(tile, level=90))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                while data:  # a short write (a full disk, a quota) is followed by one that raises
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
        else:
            Image.fromarray(tile).save(path)

    for_each_tile(
        plan.path,
        plan.coords,
        save,
        level=plan.level,
        read_size=plan.read_size,
        tile_size=plan.tile_size,
        threads=threads,
        backend=plan.backend,
        cancel=cancel,
    )
    return folder


def save_threads_for(workers: int) -> int:
    """Threads per slide for ``--save-tiles``: the CPUs this process may use, shared among slide workers."""
    from pathotune_cli.hardware import usable_cpus

    return max(1, min(8, usable_cpus() // max(1, workers)))


def _why_no_tiles(plan: Any, config: TileConfig) -> str:
    w, h = plan.level0_size
    size = plan.grid.patch_size_level0
    if plan.candidates == 0:
        return f"{plan.path.name}: no tiles: the slide ({w}x{h} px) is smaller than one {size} px tile"
    return f"{plan.path.name}: no tiles: none of {plan.candidates} has {config.min_tissue:.0%} tissue"

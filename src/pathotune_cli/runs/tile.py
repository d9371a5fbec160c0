"""``pathotune tile`` as a plain function: cut slides into tile coordinates at a physical resolution.

Per slide it writes ``<stem>.h5`` (coords + attributes), ``<stem>.tissue.geojson``, ``<stem>.thumb.png`` and,
if asked, ``<stem>_tiles/``; each under a temporary name first, with the ``.h5`` renamed last, so a slide
whose ``.h5`` exists is finished. ``manifest.csv`` lists every slide with its status and is rewritten after
each one. A slide that fails gets its one-line error in the manifest and the others go on.
"""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.runs.slides import FLAT_IMAGE_SUFFIXES, SLIDE_SUFFIXES, geojson_for, read_slides_csv

TILED_SUFFIXES = frozenset(SLIDE_SUFFIXES + FLAT_IMAGE_SUFFIXES)
"""What ``tile`` picks up from a folder: slides, and flat images as one-level slides."""
MANIFEST_COLUMNS = ("slide", "status", "tiles", "level", "mpp", "mpp_source", "seconds", "error")
TILE_FORMATS = ("png", "jpg")
Report = Callable[[str, dict[str, Any]], None]


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
    """Skip slides whose outputs exist with the same tile settings."""
    backend: str = "auto"
    """Slide reader (see ``wsi.open_slide``)."""

    def __post_init__(self) -> None:
        """Check the rules that span fields."""
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
    status: str  # ok, resumed or failed
    tiles: int = 0
    level: int | None = None
    mpp: float | None = None
    mpp_source: str = ""
    seconds: float = 0.0
    error: str = ""
    note: str = ""  # why an ``ok`` slide has no tiles; shown on stderr, not written to the manifest


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
        counts = {s: sum(r.status == s for r in self.rows) for s in ("ok", "resumed", "failed")}
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            **counts,
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


def tile_run(config: TileConfig, progress: Report | None = None) -> TileResult:
    """Tile every slide of ``config``; a failing slide is recorded and the others go on.

    Args:
        config: The run's settings.
        progress: Called as ``progress(kind, data)``: ``("start", {"total": n})`` once, then
            ``("slide", {"row": SlideRow, "done": k, "total": n})`` after each slide.

    Returns:
        A ``TileResult`` with one row per slide, in input order.
    """
    items = collect_slides(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = TileResult(out=out, manifest=out / "manifest.csv")
    rows: dict[int, SlideRow] = {}

    def finish(index: int, row: SlideRow) -> None:
        rows[index] = row
        result.rows = [rows[i] for i in sorted(rows)]
        write_manifest(result.manifest, result.rows)
        if progress is not None:
            progress("slide", {"row": row, "done": len(rows), "total": len(items)})

    if progress is not None:
        progress("start", {"total": len(items)})
    todo = []
    for index, (path, csv_mpp) in enumerate(items):
        done = _finished_row(path, config) if config.resume else None
        if done is not None:
            finish(index, done)
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
                except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. a crash in a codec)
                    path = items[index][0]
                    died = type(exc).__name__
                    error = f"{path.name}: its worker process died ({died}); rerun with --workers 1"
                    row = SlideRow(str(path), "failed", error=error)
                finish(index, row)
    else:
        for index, path, csv_mpp in todo:
            finish(index, tile_one(path, csv_mpp, config))
    result.rows = [rows[i] for i in sorted(rows)]
    write_manifest(result.manifest, result.rows)
    return result


def tile_one(path: Path, csv_mpp: float | None, config: TileConfig) -> SlideRow:
    """Plan and write one slide's outputs; never raises for a bad slide (the row says what failed)."""
    from pathotune_cli.wsi.plan import plan_slide

    start = time.perf_counter()
    out = Path(config.out)
    temps: list[Path] = []
    try:
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
        finals = _write_outputs(plan, out, config, temps)
        for temp, final in finals:  # the .h5 comes last: its presence marks the slide finished
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(temp, final)
        return SlideRow(
            slide=str(path),
            status="ok",
            tiles=len(plan.coords),
            level=plan.level,
            mpp=round(plan.mpp, 6),
            mpp_source=plan.mpp_source,
            seconds=round(time.perf_counter() - start, 2),
            note="" if len(plan.coords) else _why_no_tiles(plan, config),
        )
    except PathotuneError as exc:
        error = exc.one_line()
    except Exception as exc:  # noqa: BLE001 - one broken slide must not stop the run
        from pathotune_cli.wsi.reader import first_line

        error = f"internal error: {type(exc).__name__}: {first_line(exc)}"
    finally:  # after a rename these are gone; after a failure or Ctrl-C they are removed
        for temp in temps:
            if temp.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                temp.unlink(missing_ok=True)
    return SlideRow(str(path), "failed", seconds=round(time.perf_counter() - start, 2), error=error)


def write_manifest(path: Path, rows: Sequence[SlideRow]) -> None:
    """Write ``manifest.csv`` under a temporary name, then rename it."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            values = asdict(row)
            writer.writerow(["" if values[c] is None else values[c] for c in MANIFEST_COLUMNS])
    os.replace(temp, path)


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    """Where one slide's outputs go."""
    return {
        "h5": out / f"{stem}.h5",
        "geojson": out / f"{stem}.tissue.geojson",
        "thumb": out / f"{stem}.thumb.png",
        "tiles": out / f"{stem}_tiles",
    }


def _write_outputs(plan: Any, out: Path, config: TileConfig, temps: list[Path]) -> list[tuple[Path, Path]]:
    from pathotune_cli.wsi.coords_file import write_coords
    from pathotune_cli.wsi.geojson import write_tissue_geojson
    from pathotune_cli.wsi.thumbnail import draw_overview, save_png

    paths = output_paths(out, plan.path.stem)
    suffix = f".tmp-{os.getpid()}"

    def temp(key: str) -> Path:
        path = paths[key].with_name(paths[key].name + suffix)
        temps.append(path)
        return path

    def small_outputs() -> list[tuple[Path, Path]]:
        picture = draw_overview(
            plan.thumbnail,
            plan.level0_size,
            polygons=plan.polygons,
            coords=plan.coords,
            size_level0=plan.grid.patch_size_level0,
        )
        return [
            (write_tissue_geojson(temp("geojson"), plan.polygons), paths["geojson"]),
            (save_png(temp("thumb"), picture), paths["thumb"]),
            (write_coords(temp("h5"), plan.coords, plan.h5_attrs()), paths["h5"]),
        ]

    if not config.save_tiles:
        return small_outputs()
    from concurrent.futures import ThreadPoolExecutor

    threads = config.save_threads or save_threads_for(config.workers)
    tiles_temp = temp("tiles")
    failed = threading.Event()  # the pictures and files failed: stop saving tiles for nothing
    with ThreadPoolExecutor(max_workers=1) as pool:  # the pictures and files take shape while tiles are saved
        small = pool.submit(small_outputs)
        small.add_done_callback(lambda done: failed.set() if done.exception() is not None else None)
        tiles = _save_tiles(plan, tiles_temp, config.save_tiles, threads, failed)
        return [(tiles, paths["tiles"]), *small.result()]


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


def _finished_row(path: Path, config: TileConfig) -> SlideRow | None:
    from pathotune_cli.wsi.coords_file import read_coords

    h5 = output_paths(Path(config.out), path.stem)["h5"]
    if not h5.is_file():
        return None
    try:
        done = read_coords(h5)
    except PathotuneError:
        return None
    attrs = done.attrs
    same = attrs.get("patch_size") == config.tile_size and attrs.get("overlap") == config.overlap
    if config.target_mpp is not None:
        same = same and abs(float(attrs.get("target_mpp", 0)) - config.target_mpp) <= 0.01 * config.target_mpp
    if not same:
        return None
    return SlideRow(
        str(path),
        "resumed",
        len(done.coords),
        done.patch_level,
        attrs.get("level0_mpp"),
        str(attrs.get("mpp_source", "")),
        0.0,
    )

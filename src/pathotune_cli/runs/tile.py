"""``pathotune tile`` as a plain function: cut slides into tile coordinates at a physical resolution.

Per slide it writes ``<stem>.h5`` (coords + attributes), ``<stem>.tissue.geojson``, ``<stem>.thumb.png`` and,
if asked, ``<stem>_tiles/``; staged so the ``.h5`` is renamed last. The slides go through the one per-slide
engine (``runs.per_slide.engine``: locks, ``--resume``, records, ``manifest.csv``, ``run.json``); this module
says only what ``tile`` does to one slide (``TileJob``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.files import Staging, prepare_output_folder
from pathotune_cli.runs.options import coerce_paths
from pathotune_cli.runs.per_slide.devices import PerSlideCommand
from pathotune_cli.runs.per_slide.engine import RunPlan, SlideJob, run_slides
from pathotune_cli.runs.per_slide.inputs import collect
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow, run_exit_code
from pathotune_cli.runs.per_slide.tiling import Tiling, plan
from pathotune_cli.wsi.plan import SlidePlan

if TYPE_CHECKING:
    import numpy as np

    from pathotune_cli.wsi.damage import TileDamage

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
    """Keep slides finished earlier from the same file with the same settings (``runs.per_slide.resume``)."""
    backend: str = "auto"
    """Slide reader (see ``wsi.open_slide``)."""
    shard: Shard = WHOLE
    """Which slides this process takes (``cluster.Shard``, or ``"I/N"``): every N-th from I, sorted by path."""
    max_damaged: float = 0.05
    """With ``--save-tiles``: share of a slide's tiles that may fail to decode before the slide fails."""
    labels: Path | None = None
    """QuPath annotations (one slide's GeoJSON, a folder of ``<stem>.geojson``, or a CSV ``slide,labels``): each tile
    takes the class of the region covering ``min_label_cover`` of it, into ``labels.csv``."""
    preset: str | None = None
    """With ``labels``: the task whose classes (and aliases) the annotations' classes are matched to."""
    min_label_cover: float | None = None
    """With ``labels``: share of a tile a region must cover to label it (None: ``wsi.labels.MIN_LABEL_COVER``)."""

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
        if self.labels is not None and self.preset is None:
            raise BadInput("--labels needs the task its classes belong to", "add --preset TASK (e.g. --preset crc)")
        if self.labels is None and (self.preset is not None or self.min_label_cover is not None):
            raise BadInput("--preset and --min-label-cover are for --labels", "add --labels FILE|DIR, or drop them")
        if self.min_label_cover is not None and not 0.0 < self.min_label_cover <= 1.0:
            raise BadInput(f"--min-label-cover {self.min_label_cover} must lie above 0 and at most 1")

    @property
    def tiling(self) -> Tiling:
        """How this run cuts slides (the options every cutting command shares)."""
        return Tiling(mpp=self.target_mpp, size=self.tile_size, min_tissue=self.min_tissue, tissue=self.tissue,
                      default_mpp=self.default_mpp, backend=self.backend, mag=self.mag, overlap=self.overlap,
                      tissue_geojson=self.tissue_geojson, max_damaged=self.max_damaged)


@dataclass
class TileResult:
    """What a ``tile`` run did."""

    out: Path
    manifest: Path
    rows: list[SlideRow] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0; 2 when every slide failed on bad input (a single slide of an unsupported format); else 1."""
        return run_exit_code(self.rows)

    @property
    def failed(self) -> int:
        """Slides that failed."""
        return sum(r.status == "failed" for r in self.rows)

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return self.failed == 0

    def joined(self, others: list[TileResult]) -> TileResult:
        """This result with other shards' rows (``--devices``), sorted by slide."""
        rows = sorted((r for res in [self, *others] for r in res.rows), key=lambda r: r.slide)
        return TileResult(self.out, self.manifest, rows)

    def to_dict(self) -> dict[str, Any]:
        """The run as plain data (for ``--json``)."""
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "ok": sum(r.status == "ok" for r in self.rows),
            "kept": sum(r.resume == "kept" for r in self.rows),
            "failed": self.failed,
            "slides": [r.to_dict() for r in self.rows],
        }


def collect_slides(config: TileConfig) -> list[SlideInput]:
    """Every slide of the run (folders searched recursively; images are one-level slides), in the order given.

    Raises:
        BadInput: A path is missing, a folder holds no slides, the list is malformed, or two slides share a name.
    """
    return collect(config.slides, config.slides_csv, tiles_as_images=False).slides


def tile_run(config: TileConfig, report: Reporter = ignore) -> TileResult:
    """Tile every slide of ``config`` (of its shard); a failing slide is recorded and the others go on.

    Args:
        config: The run's settings.
        report: Receives ``SlidesStarted`` once, then ``SlideDone`` after each slide.

    Returns:
        A ``TileResult`` with one row per slide of this run, in input order. ``manifest.csv`` lists every slide
        recorded in the folder (earlier runs' and other shards' too), sorted by path.
    """
    everything = collect_slides(config)
    slides = config.shard.take(everything, key=lambda s: str(s.path))
    config.tiling.check(slides)
    out = prepare_output_folder(config.out, "--out")
    if not config.shard.whole:
        note(report, f"shard {config.shard.label} ({config.shard.source}): {len(slides)} of {len(everything)} slides")
    settings = {k: [str(p) for p in v] if k == "slides" else (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(config).items()}
    job = TileJob(out, config, report)
    job.check_labels(slides)
    rows = run_slides(job, RunPlan(slides, everything, config.shard, settings, config.resume, config.workers))
    if config.labels is not None:  # the run's labelled tiles in one file, from every slide's (shards' too)
        from pathotune_cli.wsi.labels_csv import combine_labels_csv

        combine_labels_csv(sorted(out.glob("*.labels.csv")), out / "labels.csv")
    return TileResult(out=out, manifest=out / "manifest.csv", rows=rows)


def count_slides(config: TileConfig) -> int:
    """This process's slides (its shard), listed as ``tile_run`` lists them."""
    return len(config.shard.take(collect_slides(config), key=lambda s: str(s.path)))


TILE = PerSlideCommand("tile", tile_run, count_slides, places_model=False)
"""``tile`` for ``--devices`` (CPU workers; tile reads on CPUs whatever the entry)."""


class TileJob(SlideJob):
    """What ``tile`` does to one slide: plan it, write its coords, tissue outline, thumbnail and tile images."""

    command = "tile"

    def __init__(self, out: Path, config: TileConfig, report: Reporter = ignore) -> None:
        super().__init__(out, report)
        self.config = config

    def settings(self, slide: SlideInput) -> dict[str, object]:
        """Every setting a slide's tiles (and labels) depend on."""
        from pathotune_cli.runs.per_slide.resume import file_digest

        labels = {"labels": file_digest(self._labels_file(slide)), "preset": self.config.preset,
                  "min_label_cover": self.config.min_label_cover} if self.config.labels is not None else {}
        return {"version": TILE_ALGORITHM, **self.config.tiling.settings(slide), "save_tiles": self.config.save_tiles,
                **labels}

    def outputs(self, stem: str) -> list[Path]:
        """The slide's finished outputs (its tile folder only with ``--save-tiles``, its labels with ``--labels``)."""
        paths = output_paths(self.out, stem)
        return ([paths["h5"], paths["geojson"], paths["thumb"]] + ([paths["tiles"]] if self.config.save_tiles else [])
                + ([paths["labels"]] if self.config.labels is not None else []))

    def check_labels(self, slides: list[SlideInput]) -> None:
        """Every slide's annotations found and read before any slide is cut (a bad file is refused at once).

        Raises:
            BadInput: a missing, unreadable or empty annotation file, an unknown ``--preset``.
        """
        if self.config.labels is None:
            return
        from pathotune_cli.config import load_task_preset
        from pathotune_cli.wsi.labels import labels_for_slides, read_label_regions

        task = load_task_preset(str(self.config.preset))
        found = labels_for_slides([s.path for s in slides], self.config.labels)
        for file in dict.fromkeys(found.values()):
            if file is not None:
                read_label_regions(file, task)

    def _labels_file(self, slide: SlideInput) -> Path | None:
        from pathotune_cli.wsi.labels import labels_for_slides

        return labels_for_slides([slide.path], Path(str(self.config.labels)))[slide.path]

    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """Plan the slide and write its outputs under temporary names."""
        planned = plan(slide, self.config.tiling).plan
        damage = _write_outputs(planned, self.out, self.config, staged)
        notes = (*planned.notes, *([] if len(planned.coords) else [_why_no_tiles(planned, self.config)]))
        damaged = damage.count if damage is not None else 0
        values: dict[str, str | int | float | bool | None] = {"tiles_damaged": damaged}
        if self.config.labels is not None:
            labelled, lines = self._cut_labels(slide, planned, staged)
            values["tiles_labelled"] = labelled
            notes = (*notes, *lines)
        return SlideRow(str(slide.path), "ok", tiles=len(planned.coords) - len(damage.left_out if damage else ()),
                        level=planned.level, mpp=round(planned.mpp, 6), mpp_source=planned.mpp_source, notes=notes,
                        values=values)

    def _cut_labels(self, slide: SlideInput, planned: SlidePlan, staged: Staging) -> tuple[int, list[str]]:
        """The slide's ``<stem>.labels.csv`` (staged; header only without an annotation file): (tiles, warnings)."""
        from pathotune_cli.config import load_task_preset
        from pathotune_cli.wsi.labels_csv import cut_labels, write_labels_csv

        final = output_paths(self.out, slide.stem)["labels"]
        source = self._labels_file(slide)
        if source is None:
            write_labels_csv(staged.temp(final), [])
            return 0, [f"{slide.name}: no annotation file in {self.config.labels}; no labelled tiles"]
        cut = cut_labels(planned, source, load_task_preset(str(self.config.preset)), self.config.min_label_cover)
        write_labels_csv(staged.temp(final), cut.rows)
        counts = ", ".join(f"{n} {c}" for c, n in cut.counts().items() if n)
        return len(cut.rows), [*cut.warnings(), f"{slide.name}: labelled tiles: {counts or 'none'}"]


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    """Where one slide's outputs go."""
    return {
        "h5": out / f"{stem}.h5",
        "geojson": out / f"{stem}.tissue.geojson",
        "thumb": out / f"{stem}.thumb.png",
        "tiles": out / f"{stem}_tiles",
        "labels": out / f"{stem}.labels.csv",
    }


def _write_outputs(plan: SlidePlan, out: Path, config: TileConfig, staged: Staging) -> TileDamage | None:
    """Every output of a slide under a temporary name, staged so the ``.h5`` is renamed last.

    With ``--save-tiles`` the tiles are decoded: those that do not decode are filled from a coarser level or left
    out (``wsi.damage``), and the coords file then lists only the tiles saved. Returns the damage met (None
    without ``--save-tiles``: no tile was decoded).
    """
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

    if not config.save_tiles:
        small_outputs()
        write_coords(temps["h5"], plan.coords, plan.h5_attrs())
        return None
    from concurrent.futures import ThreadPoolExecutor

    from pathotune_cli.wsi.damage import TileDamage

    damage = TileDamage(plan.path.name, total=len(plan.coords), max_share=config.max_damaged)
    threads = config.save_threads or save_threads_for(config.workers)
    failed = threading.Event()  # the pictures and files failed: stop saving tiles for nothing
    with ThreadPoolExecutor(max_workers=1) as pool:  # the pictures and files take shape while tiles are saved
        small = pool.submit(small_outputs)
        small.add_done_callback(lambda done: failed.set() if done.exception() is not None else None)
        _save_tiles(plan, temps["tiles"], config.save_tiles, threads, failed, damage)
        small.result()
    left_out = set(damage.left_out)
    kept = [i for i, (x, y) in enumerate(plan.coords) if (int(x), int(y)) not in left_out]
    write_coords(temps["h5"], plan.coords[kept], plan.h5_attrs())
    return damage


def _save_tiles(plan: SlidePlan, folder: Path, fmt: str, threads: int, cancel: threading.Event | None = None,
                damage: TileDamage | None = None) -> Path:
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

    def save(tile: np.ndarray, x: int, y: int) -> None:
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
        damage=damage,
    )
    return folder


def save_threads_for(workers: int) -> int:
    """Threads per slide for ``--save-tiles``: the CPUs this process may use, shared among slide workers."""
    from pathotune_cli.hardware import usable_cpus

    return max(1, min(8, usable_cpus() // max(1, workers)))


def _why_no_tiles(plan: SlidePlan, config: TileConfig) -> str:
    w, h = plan.level0_size
    size = plan.grid.patch_size_level0
    if plan.candidates == 0:
        return f"{plan.path.name}: no tiles: the slide ({w}x{h} px) is smaller than one {size} px tile"
    return f"{plan.path.name}: no tiles: none of {plan.candidates} has {config.min_tissue:.0%} tissue"

"""``pathotune predict`` as a plain function: a prompt file mapped over slides, images and folders.

Slides are tiled on the fly at the mpp and tile size stored in the prompt file (exactly as ``pathotune tile``
would cut them), or at the coordinates of an HDF5 file from ``tile``, CLAM or TRIDENT; one slide at a time goes
through ``runs.predict_slide``. Tile images are classified as they are, into ``predictions.csv``. A broken slide
never stops the others: it is listed in the summary with its error, and the result says how many failed.
With a shard (``--shard``, a SLURM array task, a ``--devices`` worker) only its share of the slides is predicted,
each under its lock (``runs.locks``), and tile images only by shard 0 (they share one ``predictions.csv``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.cluster import WHOLE, Shard
from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, SlideDone, SlidesStarted, SlideStarted, ignore, note, warn
from pathotune_cli.formats import is_flat_image, is_slide
from pathotune_cli.runs.explain import check_alpha
from pathotune_cli.runs.options import coerce_paths, kernel_spec
from pathotune_cli.wsi.tissue import TISSUE_MODES


@dataclass(frozen=True)
class PredictOptions:
    """What to predict on, with which prompt file, and how."""

    prompts: Path
    inputs: tuple[Path, ...] = ()
    out: Path = Path("predictions")
    batch_size: int = 64
    workers: int | None = None
    """Tile-reading processes; None: 0 when the model runs on the CPU (it needs every core), else 2."""
    precision: str = "auto"
    device: str = "auto"
    weights: Path | None = None
    coords: Path | None = None
    """A coords ``.h5`` (one slide) or a folder of ``<slide stem>.h5`` files to reuse instead of tiling."""
    min_tissue: float = 0.25
    tissue: str = "otsu"
    tissue_geojson: Path | None = None
    slides_csv: Path | None = None
    """A CSV with a ``slide`` column (more slides to predict) and an optional ``mpp`` column."""
    default_mpp: float | None = None
    heatmap_class: str | None = None
    backend: str = "auto"
    resume: bool = False
    """Keep slides finished earlier from the same file with the same prompt file and settings."""
    kernels: str = "auto"
    """``--kernels``: auto (measured), or pinned (``attention=plain,weights=bf16``)."""
    alpha: float | None = None
    """Add conformal prediction sets at this level (one the prompt file stores)."""
    uncalibrated: bool = False
    """Report the raw softmax instead of the calibrated probabilities."""
    explain_top: int = 0
    """Explain the this-many most confident tiles of each class per slide (0: none)."""

    shard: Shard = WHOLE
    """Which slides this process takes (``cluster.Shard``, or ``"I/N"``): every N-th from I, sorted by path."""

    def __post_init__(self) -> None:
        """The rules the command line states for each option, for Python callers too."""
        coerce_paths(self)
        kernel_spec(self.kernels)
        if not self.inputs and self.slides_csv is None:
            raise BadInput("nothing to predict on", "pass slides, images or folders, or --slides-csv")
        if not 1 <= self.batch_size <= 4096:
            raise BadInput(f"--batch-size {self.batch_size} must lie between 1 and 4096")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise BadInput(f"--min-tissue {self.min_tissue} must lie between 0 and 1")
        if self.tissue not in TISSUE_MODES:
            raise BadInput(f"--tissue {self.tissue!r} is not a tissue mode", f"use {' or '.join(TISSUE_MODES)}")
        if self.coords is not None and not Path(self.coords).exists():
            raise BadInput(f"--coords {self.coords} does not exist", "pass a coords .h5 or a folder of them")
        if not 0 <= self.explain_top <= 1000:
            raise BadInput(f"--explain-top {self.explain_top} must lie between 0 and 1000")
        check_alpha(self.alpha)


@dataclass(frozen=True)
class ImagesResult:
    """Tile images classified into one CSV."""

    file: Path
    images: int
    counts: dict[str, int]
    flagged: int | None = None
    """Images flagged out of distribution (None without OOD statistics)."""


@dataclass(frozen=True)
class PredictResult:
    """What a ``predict`` run did: one summary row per slide of this run, and the images' CSV."""

    out: Path
    prompts: Path
    task: str
    classes: list[str]
    tile: dict[str, Any]
    precision: str
    probabilities: str = ""
    """What the reported probabilities are (calibrated, with the temperature, or raw and why)."""
    slides: list[dict[str, Any]] = field(default_factory=list)
    images: ImagesResult | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Slides that failed (not those another process was on: ``locked``)."""
        return sum(r["status"] == "failed" for r in self.slides)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        data = asdict(self)
        data.update(out=str(self.out), prompts=str(self.prompts), failed=self.failed)
        if self.images is not None:
            data["images"] = {**asdict(self.images), "file": str(self.images.file)}
        return data


def collect_inputs(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split INPUT arguments into slides and tile images (``formats``); folders are searched recursively.

    Raises:
        BadInput: an input does not exist, two slides share a name (their outputs would collide), or nothing
            to predict on was found.
    """
    slides: list[Path] = []
    images: list[Path] = []
    for path in (Path(p).expanduser() for p in inputs):
        if not path.exists():
            raise BadInput(f"input {path} does not exist", "pass slides, images or folders that exist")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if is_slide(file):
                slides.append(file)
            elif is_flat_image(file):
                images.append(file)
            elif not path.is_dir():
                slides.append(file)  # named explicitly: let the reader say whether it is a slide
    if not slides and not images:
        raise BadInput(f"no slides or images found in {', '.join(map(str, inputs))}",
                       "slides end in .svs, .tif, .ndpi, .mrxs, ...; tile images in .png, .jpg, ...")
    stems: dict[str, Path] = {}
    for slide in slides:
        if stems.setdefault(slide.stem, slide) != slide:
            raise BadInput(f"two slides share the name {slide.stem!r} ({stems[slide.stem]} and {slide})",
                           "rename one, or predict them into different --out folders")
    return slides, images


def predict_run(opts: PredictOptions, report: Reporter = ignore) -> PredictResult:
    """Predict every input.

    Writes per-slide CSV, GeoJSON and heatmap, ``summary.csv``, ``predictions.csv`` and the run record ``run.json``.

    Raises:
        BadInput: no inputs, a damaged prompt file, another backbone's weights, an unknown ``--heatmap-class``.
    """
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.files import prepare_output_folder, remove_stale_temporaries, sha256_file
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.per_slide.inputs import check_tissue_geojson, read_slides_csv
    from pathotune_cli.runs.per_slide.merge import rebuild_summary
    from pathotune_cli.runs.records import write_slides_record
    from pathotune_cli.runs.tile_level.predict import SlideContext
    from pathotune_cli.runs.trust.apply import load_trust

    if read_prompt_file(opts.prompts).header.level == "slide":
        from pathotune_cli.runs.slide_level.predict import predict_slides

        prepare_output_folder(opts.out, "--out")  # before the model loads: a bad --out fails at once
        return predict_slides(opts, report)
    started = time.time()
    listed = read_slides_csv(opts.slides_csv) if opts.slides_csv else []
    everything, slides, images = shard_inputs(opts, [p for p, _ in listed], report)
    check_tissue_geojson(slides, opts.tissue_geojson)
    _check_coords(opts.coords, slides)
    out = prepare_output_folder(opts.out, "--out")  # before the model loads: a bad --out fails at once
    remove_stale_temporaries(out)
    model, file = load_prompted_model(opts.prompts, opts.weights)
    task = file.header.task
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated, alpha=opts.alpha)
    if trust.notice:
        warn(report, trust.notice)
    if opts.heatmap_class is not None and opts.heatmap_class not in task.class_names:
        raise BadInput(f"--heatmap-class '{opts.heatmap_class}' is not a class of this prompt file",
                       f"use one of {', '.join(task.class_names)}")
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    write_slides_record(out, "predict", opts.shard, everything, settings, started, "running")
    ctx = SlideContext(model, placement, task.class_names, task.tile.mpp, task.tile.size, opts, out, report,
                       sha256_file(file.path), trust=trust)
    rows = _predict_slides(ctx, slides, {p.name: mpp for p, mpp in listed if mpp is not None})
    if everything:
        rebuild_summary(out, "predict", rows, task.class_names, report)
    result = PredictResult(
        out=out, prompts=file.path, task=task.name, classes=task.class_names, tile=task.tile.model_dump(),
        precision=placement.precision, probabilities=trust.describe(), slides=rows,
        images=_predict_images(ctx, images) if images else None,
        seconds=round(time.time() - started, 2),
    )
    write_slides_record(out, "predict", opts.shard, everything, settings, started, "finished",
                        prompts_sha256=ctx.prompts_sha256, precision=placement.precision,
                        backbone_fingerprint=file.header.backbone.fingerprint, kernels=model.kernel_choices(),
                        slides=len(rows), failed=result.failed)
    return result


def _check_coords(coords: Path | None, slides: list[Path]) -> None:
    """Read every slide's ``--coords`` file up front: a bad one is refused (exit 2) before the model loads."""
    from pathotune_cli.runs.tile_level.predict import coords_file_for
    from pathotune_cli.wsi import read_coords

    if coords is None:
        return
    for path in dict.fromkeys(coords_file_for(coords, slide) for slide in slides):
        if path is not None:
            read_coords(path)


def shard_inputs(opts: PredictOptions, listed: list[Path], report: Reporter) -> tuple[list[Path], list[Path],
                                                                                       list[Path]]:
    """(every slide of the run, this shard's slides, the tile images this shard classifies: all for shard 0)."""
    everything, images = collect_inputs([*opts.inputs, *listed])
    slides = opts.shard.take(everything)
    if not opts.shard.whole:
        note(report, f"shard {opts.shard.label} ({opts.shard.source}): {len(slides)} of {len(everything)} slides"
                     + (f"; the {len(images)} tile images go to shard 0" if images else ""))
    return everything, slides, images if opts.shard.index == 0 else []


def reading_workers(requested: int | None, device: str) -> int:
    """Tile-reading processes: as asked, or (None) 0 when the model runs on the CPU and 2 on a GPU.

    On a CPU the model's threads already use every core, so a reading process takes one from them and the
    whole pass slows: vit_small on 2 cores predicted 9.4 tiles/s with 2 readers and 11.5 reading between
    batches in its own process, where decoding a batch costs about 1% of running the model on it
    (benchmarks, issue 6). With a GPU the CPU is free to read ahead.
    """
    if requested is not None:
        return requested
    return 0 if device == "cpu" else 2


def _predict_slides(ctx: Any, slides: list[Path], csv_mpp: dict[str, float]) -> list[dict[str, Any]]:
    """Every slide in turn, with reading processes (on a GPU) started once for all of them."""
    from pathotune_cli.runs.tile_level.predict import predict_slide_safely

    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workers = reading_workers(ctx.opts.workers, ctx.placement.device)
        if workers > 0 and slides:
            from pathotune_cli.wsi import TileReaderPool

            ctx.pool = stack.enter_context(TileReaderPool(workers))
        if slides:
            ctx.report(SlidesStarted(len(slides)))
        for index, slide in enumerate(slides):
            ctx.report(SlideStarted(index, len(slides), slide.name))
            row = predict_slide_safely(ctx, slide, csv_mpp.get(slide.name))
            rows.append(row)
            error = row["error"] if slide.name in row["error"] else f"{slide.name}: {row['error']}"
            detail = error if row["status"] != "ok" else (row.get("resume") or f"{row.get('tiles', 0)} tiles")
            ctx.report(SlideDone(slide.name, row["status"], index + 1, len(slides), detail,
                                 seconds=row.get("seconds", 0.0)))
    return rows


def _predict_images(ctx: Any, images: list[Path]) -> ImagesResult:
    """``predictions.csv`` of tile images, with the trust columns where available.

    With ``--explain-top`` the most confident images of each class are explained into ``predictions.explain/``.
    """
    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.trust.apply import extra_headers, extra_values, tile_columns
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.outputs import model_outputs

    store = ImageStore(images, ctx.model.backbone.input_size, max_bytes=256 * 1024**2)
    outputs = model_outputs(ctx.model, store, ctx.opts.batch_size, ctx.placement, with_features=ctx.trust.has_ood)
    scores = ctx.trust.ood_scores(outputs.features) if outputs.features is not None else None
    columns = tile_columns(ctx.trust, outputs.logits, scores, ctx.class_names)
    labels = columns["labels"]
    path = ctx.out / "predictions.csv"
    write_csv(path, ["path", "class", *[f"prob_{c}" for c in ctx.class_names], *extra_headers(columns)],
              ([str(p), ctx.class_names[int(k)], *[f"{v:.6f}" for v in row], *extra_values(columns, i)]
               for i, (p, k, row) in enumerate(zip(images, labels, columns["probs"], strict=True))))
    if ctx.opts.explain_top:
        _explain_images(ctx, images, columns["probs"], ctx.out / "predictions.explain")
    flagged = int(np.sum(columns["ood"])) if "ood" in columns else None
    return ImagesResult(path, len(images), {c: int((labels == i).sum()) for i, c in enumerate(ctx.class_names)},
                        flagged)


def _explain_images(ctx: Any, images: list[Path], probs: Any, folder: Path) -> None:
    """The ``--explain-top`` most confident images of each class, explained into ``folder``."""
    from pathotune_cli.runs.explain import explain_images, most_confident

    chosen = [images[i] for _, _, i in most_confident(probs, ctx.opts.explain_top)]
    if chosen:
        explain_images(ctx.model, ctx.trust, chosen, folder, ctx.class_names, 3, 8, ctx.placement.device)

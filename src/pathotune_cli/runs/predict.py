"""``pathotune predict`` as a plain function: a prompt file mapped over slides, images and folders.

Slides are tiled on the fly at the mpp and tile size stored in the prompt file (exactly as ``pathotune tile``
would cut them), or at the coordinates of an HDF5 file from ``tile``, CLAM or TRIDENT. Tiles are read ahead by
worker processes while the model runs. A broken slide never stops the others: it is listed in the summary
with its error, and the exit code says whether every slide succeeded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.files import Staging, remove_stale_temporaries, sha256_file, write_csv, write_png
from pathotune_cli.runs.resume import (
    SlideKey,
    decide,
    file_digest,
    folder_rows,
    input_identity,
    record_failure,
    record_path,
    write_record,
)
from pathotune_cli.runs.slides import FLAT_IMAGE_SUFFIXES, SLIDE_SUFFIXES

IMAGE_SUFFIXES = (*FLAT_IMAGE_SUFFIXES, ".bmp", ".webp")
"""Tile images ``predict`` classifies as they are (TIFFs are read as slides)."""
COMMAND = "predict"
"""Names the per-slide records: ``<stem>.predict.json``."""
PREDICT_ALGORITHM = 1
"""Bumped when a change of pathotune predicts differently from the same slide, model and settings."""


@dataclass
class PredictOptions:
    """What to predict on, with which prompt file, and how."""

    prompts: str
    inputs: list[str]
    out: str = "predictions"
    batch_size: int = 64
    workers: int | None = None
    """Tile-reading processes; None: 0 when the model runs on the CPU (it needs every core), else 2."""
    precision: str = "auto"
    device: str = "auto"
    weights: str | None = None
    coords: str | None = None
    """A coords ``.h5`` (one slide) or a folder of ``<slide stem>.h5`` files to reuse instead of tiling."""
    min_tissue: float = 0.25
    tissue: str = "otsu"
    tissue_geojson: str | None = None
    slides_csv: str | None = None
    """A CSV with a ``slide`` column (more slides to predict) and an optional ``mpp`` column."""
    default_mpp: float | None = None
    heatmap_class: str | None = None
    backend: str = "auto"
    resume: bool = False
    """Skip slides whose outputs were finished by an earlier run with the same prompt file and settings."""


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """Split INPUT arguments into slides and images; folders are searched recursively.

    Raises:
        BadInput: an input does not exist, or nothing to predict on was found.
    """
    slides: list[Path] = []
    images: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise BadInput(f"input {path} does not exist", "pass slides, images or folders that exist")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            suffix = file.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(file)
            elif suffix in SLIDE_SUFFIXES or not path.is_dir():
                slides.append(file)  # named explicitly: let the reader say whether it is a slide
    if not slides and not images:
        raise BadInput(f"no slides or images found in {', '.join(inputs)}",
                       f"slides end in {', '.join(SLIDE_SUFFIXES[:6])}, ...; images in {', '.join(IMAGE_SUFFIXES)}")
    return slides, images


def predict_run(opts: PredictOptions, report: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Predict every input; writes per-slide CSV, GeoJSON and heatmap, ``summary.csv`` and ``predictions.csv``."""
    from pathotune_cli.config.loader import validate
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.hardware import place

    report = report or (lambda kind, info: None)
    started = time.time()
    from pathotune_cli.runs.slides import read_slides_csv

    listed = read_slides_csv(Path(opts.slides_csv)) if opts.slides_csv else []
    slides, images = collect_inputs(opts.inputs + [str(p) for p, _ in listed]) if opts.inputs or listed else ([], [])
    if not slides and not images:
        raise BadInput("nothing to predict on", "pass slides, images or folders, or --slides-csv")
    mpp_table = {p.name: mpp for p, mpp in listed if mpp is not None}
    model, file = load_prompted_model(opts.prompts, opts.weights)
    if random_weights_warning(model):
        report("warning", {"message": random_weights_warning(model)})
    task = validate(TaskPreset, file.meta["task"], source=str(file.path))
    if opts.heatmap_class is not None and opts.heatmap_class not in task.class_names:
        raise BadInput(f"--heatmap-class '{opts.heatmap_class}' is not a class of this prompt file",
                       f"use one of {', '.join(task.class_names)}")
    placement = place(opts.device, opts.precision)
    model.to(placement.device)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    context = _Context(
        model, placement, task.class_names, task.tile.mpp, task.tile.size, opts, out, report, sha256_file(file.path)
    )
    rows = []
    with contextlib.ExitStack() as stack:
        workers = reading_workers(opts.workers, placement.device)
        if workers > 0 and slides:
            from pathotune_cli.wsi import TileReaderPool

            context.pool = stack.enter_context(TileReaderPool(workers))  # started once for every slide
        for index, slide in enumerate(slides):
            report("slide", {"index": index, "total": len(slides), "slide": slide.name})
            rows.append(_predict_slide_safely(context, slide, mpp_table))
            report("slide_done", rows[-1])
    if slides:
        _write_summary(out / "summary.csv", rows, task.class_names)
    image_result = _predict_images(context, images) if images else None
    failed = [r for r in rows if r["status"] != "ok"]
    return {
        "out": str(out),
        "prompts": str(file.path),
        "task": task.name,
        "classes": task.class_names,
        "tile": {"mpp": task.tile.mpp, "size": task.tile.size},
        "precision": placement.precision,
        "slides": rows,
        "images": image_result,
        "failed": len(failed),
        "seconds": round(time.time() - started, 2),
    }


@dataclass
class _Context:
    model: Any
    placement: Any
    class_names: list[str]
    tile_mpp: float
    tile_size: int
    opts: PredictOptions
    out: Path
    report: Callable[[str, dict[str, Any]], None]
    prompts_sha256: str
    """The prompt file's hash: part of every slide's key, so ``--resume`` never keeps another model's output."""
    pool: Any = None
    """Reading processes shared by every slide of the run (None: read in this process)."""


def _predict_slide_safely(ctx: _Context, slide: Path, mpp_table: dict[str, float]) -> dict[str, Any]:
    started = time.time()
    csv_mpp = mpp_table.get(slide.name)
    resume = ""
    try:
        key = slide_key(ctx, slide, csv_mpp)
        if ctx.opts.resume:
            decision = decide(ctx.out, slide.stem, COMMAND, key, list(output_paths(ctx.out, slide.stem).values()))
            if decision.keep:
                ctx.report("info", {"message": f"{slide.name}: finished earlier with these settings, kept (--resume)"})
                return {**decision.row, "resume": "kept", "seconds": 0.0}
            resume = decision.resume
        row = {**_predict_slide(ctx, slide, csv_mpp, key), "status": "ok", "error": ""}
        row["seconds"] = round(time.time() - started, 2)
        write_record(ctx.out, slide.stem, COMMAND, key, row)  # last: the slide is finished
        return {**row, "resume": resume}
    except PathotuneError as exc:
        error = exc.one_line()
        ctx.report("warning", {"message": error if slide.name in exc.problem else f"{slide.name}: {error}"})
    except Exception as exc:  # noqa: BLE001 - one broken slide must never stop the others
        error = f"{type(exc).__name__}: {exc}"
        ctx.report("warning", {"message": f"{slide.name}: unexpected {type(exc).__name__}: {exc}"})
    seconds = round(time.time() - started, 2)
    row = {"slide": slide.name, "status": "failed", "error": error, "tiles": 0, "seconds": seconds}
    outputs = output_paths(ctx.out, slide.stem).values()
    record_failure(ctx.out, slide.stem, COMMAND, outputs, lambda: slide_key(ctx, slide, csv_mpp), row)
    return {**row, "resume": resume}


def output_paths(out: Path, stem: str) -> dict[str, Path]:
    """Where one slide's predictions go."""
    return {
        "csv": out / f"{stem}.predictions.csv",
        "geojson": out / f"{stem}.tiles.geojson",
        "heatmap": out / f"{stem}.heatmap.png",
    }


def slide_key(ctx: _Context, slide: Path, csv_mpp: float | None) -> SlideKey:
    """Everything a slide's predictions depend on: the slide, the prompt file and every setting."""
    from pathotune_cli.runs.slides import geojson_for

    opts = ctx.opts
    geojson = geojson_for(slide, Path(opts.tissue_geojson) if opts.tissue_geojson else None)
    return SlideKey(
        input=input_identity(slide),
        settings={
            "version": PREDICT_ALGORITHM,
            "prompts_sha256": ctx.prompts_sha256,
            "precision": ctx.placement.precision,
            "min_tissue": opts.min_tissue,
            "tissue": opts.tissue,
            "tissue_geojson": file_digest(geojson),
            "coords": file_digest(_coords_file_for(opts.coords, slide)),
            "csv_mpp": csv_mpp,
            "default_mpp": opts.default_mpp,
            "heatmap_class": opts.heatmap_class,
            "reader": opts.backend,
        },
    )


def _predict_slide(ctx: _Context, slide: Path, mpp_override: float | None, key: SlideKey) -> dict[str, Any]:
    from pathotune_cli.runs.slides import geojson_for
    from pathotune_cli.wsi import draw_heatmap, iter_tile_batches, plan_slide, write_tiles_geojson

    opts = ctx.opts
    plan = plan_slide(
        slide, target_mpp=ctx.tile_mpp, tile_size=ctx.tile_size, min_tissue=opts.min_tissue, tissue=opts.tissue,
        tissue_geojson=geojson_for(slide, Path(opts.tissue_geojson) if opts.tissue_geojson else None),
        mpp_override=mpp_override, default_mpp=opts.default_mpp,
        backend=opts.backend,
    )
    for note in plan.notes:
        ctx.report("warning", {"message": note})
    coords, level, read_size, footprint = plan.coords, plan.level, plan.read_size, plan.grid.patch_size_level0
    coords_source = "tiled on the fly"
    coords_file = _coords_file_for(opts.coords, slide)
    if coords_file is not None:
        coords, level, read_size, footprint = _reuse_coords(coords_file, plan, ctx.tile_size)
        coords_source = str(coords_file)
    ctx.report("tiles", {"slide": slide.name, "total": len(coords)})
    probs = np.zeros((len(coords), len(ctx.class_names)), np.float32)
    if len(coords):
        batches = iter_tile_batches(
            plan.path, coords, level=level, read_size=read_size, tile_size=ctx.tile_size,
            batch_size=opts.batch_size, workers=0, backend=plan.backend, pool=ctx.pool,
        )
        for batch in batches:
            probs[batch.start : batch.start + len(batch.tiles)] = _infer(ctx, batch.tiles)
            ctx.report("tiles_done", {"slide": slide.name, "done": batch.start + len(batch.tiles)})
    paths = output_paths(ctx.out, slide.stem)
    picture = draw_heatmap(plan.thumbnail, plan.level0_size, coords, footprint, probs, ctx.class_names,
                           show=opts.heatmap_class)
    with Staging() as staged:  # every output under a temporary name first, then renamed together
        _write_tile_csv(staged.temp(paths["csv"]), coords, footprint, probs, ctx.class_names)
        write_tiles_geojson(staged.temp(paths["geojson"]), coords, footprint, ctx.class_names, probs)
        write_png(staged.temp(paths["heatmap"]), picture)
        record_path(ctx.out, slide.stem, COMMAND).unlink(missing_ok=True)
        staged.commit()
    labels = probs.argmax(1) if len(coords) else np.zeros(0, int)
    tile_area = (footprint * plan.mpp / 1000.0) ** 2
    row: dict[str, Any] = {
        "slide": slide.name, "tiles": int(len(coords)), "level": int(level), "mpp": round(plan.mpp, 5),
        "mpp_source": plan.mpp_source, "coords": coords_source, "tissue_area_mm2": round(plan.tissue_area_mm2, 4),
    }
    for i, name in enumerate(ctx.class_names):
        count = int((labels == i).sum())
        row[f"fraction_{name}"] = round(count / len(coords), 4) if len(coords) else 0.0
        row[f"area_mm2_{name}"] = round(count * tile_area, 4)
    return row


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


def _infer(ctx: _Context, tiles: np.ndarray) -> np.ndarray:
    import torch

    images = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div_(255.0).to(ctx.placement.device)
    with torch.no_grad(), ctx.placement.autocast():
        logits = ctx.model(images)
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def _coords_file_for(coords: str | None, slide: Path) -> Path | None:
    if coords is None:
        return None
    path = Path(coords)
    if path.is_file():
        return path
    candidate = path / f"{slide.stem}.h5"
    if not candidate.is_file():
        raise BadInput(f"no coords file {candidate} for {slide.name}", "run `pathotune tile` on it, or drop --coords")
    return candidate


def _reuse_coords(path: Path, plan, tile_size: int) -> tuple[np.ndarray, int, int, int]:  # noqa: ANN001
    from pathotune_cli.wsi import read_coords
    from pathotune_cli.wsi.grid import level_for_footprint
    from pathotune_cli.wsi.open import open_slide

    coords_file = read_coords(path)
    with open_slide(plan.path, plan.backend) as reader:
        downsamples = reader.level_downsamples
    footprint = coords_file.footprint(downsamples)
    level, read_size = level_for_footprint(downsamples, footprint, tile_size)
    return coords_file.coords, level, read_size, footprint


def _predict_images(ctx: _Context, images: list[Path]) -> dict[str, Any]:
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.loop import predict_probs

    store = ImageStore(images, ctx.model.backbone.input_size, max_bytes=256 * 1024**2)
    probs = predict_probs(ctx.model, store, ctx.opts.batch_size, ctx.placement)
    labels = probs.argmax(1)
    path = ctx.out / "predictions.csv"
    write_csv(path, ["path", "class", *[f"prob_{c}" for c in ctx.class_names]],
              ([str(p), ctx.class_names[int(k)], *[f"{v:.6f}" for v in row]]
               for p, k, row in zip(images, labels, probs, strict=True)))
    counts = {c: int((labels == i).sum()) for i, c in enumerate(ctx.class_names)}
    return {"file": str(path), "images": len(images), "counts": counts}


def _write_tile_csv(path: Path, coords: np.ndarray, footprint: int, probs: np.ndarray, classes: list[str]) -> None:
    labels = probs.argmax(1) if len(probs) else np.zeros(0, int)
    header = ["x", "y", "w", "h", "class", *[f"prob_{c}" for c in classes]]
    rows = ([int(x), int(y), footprint, footprint, classes[int(k)], *[f"{v:.6f}" for v in p]]
            for (x, y), k, p in zip(coords, labels, probs, strict=True))
    write_csv(path, header, rows)


def _write_summary(path: Path, rows: list[dict[str, Any]], classes: list[str]) -> None:
    """``summary.csv``: every slide recorded in the folder (earlier runs' too), this run's rows with their
    resume word, sorted by slide name."""
    folder = {r["slide"]: r for r in folder_rows(path.parent, COMMAND)}
    folder.update({r["slide"]: r for r in rows})
    header = ["slide", "status", "tiles", "level", "mpp", "mpp_source", "tissue_area_mm2",
              *[f"fraction_{c}" for c in classes], *[f"area_mm2_{c}" for c in classes], "coords", "seconds",
              "resume", "error"]
    write_csv(path, header, ([folder[s].get(k, "") for k in header] for s in sorted(folder)))

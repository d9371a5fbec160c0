"""One slide through ``predict``: its key, its tiles through the model, its files, its record.

A slide's files (``<stem>.predictions.csv``, ``<stem>.tiles.geojson``, ``<stem>.heatmap.png`` and, with
``--explain-top``, the folder ``<stem>.explain/``) are written under temporary names and renamed together, then
its record ``<stem>.predict.json``; a slide that fails keeps no files, only its record saying why
(``runs.resume``). A broken slide never stops the others.

Per tile: the reported probabilities (calibrated unless ``--uncalibrated``, ``runs.trust``), with ``--alpha`` the
prediction set and its size, and where the prompt file has OOD statistics the OOD score and flag; a flagged tile
is classified ``Uncertain`` in the GeoJSON, and the slide's row gets the flagged share (``ood_fraction``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, describe
from pathotune_cli.events import Reporter, TilesDone, TilesPlanned, note, warn
from pathotune_cli.files import Staging, write_csv
from pathotune_cli.runs.per_slide.resume import (
    SlideKey,
    decide,
    file_digest,
    input_identity,
    record_failure,
    record_path,
    write_record,
)
from pathotune_cli.runs.trust.apply import UNCERTAIN, extra_headers, extra_values, tile_columns

COMMAND = "predict"
"""Names the per-slide records: ``<stem>.predict.json``."""
PREDICT_ALGORITHM = 2
"""Bumped when a change of pathotune predicts differently from the same slide, model and settings (2: calibrated
probabilities by default, prediction sets, OOD columns)."""


@dataclass
class SlideContext:
    """What every slide of a ``predict`` run shares: the model, its placement and the run's settings."""

    model: Any
    placement: Any
    class_names: list[str]
    tile_mpp: float
    tile_size: int
    opts: Any
    """The run's ``PredictOptions``."""
    out: Path
    report: Reporter
    prompts_sha256: str
    """The prompt file's hash: part of every slide's key, so ``--resume`` never keeps another model's output."""
    pool: Any = None
    """Reading processes shared by every slide of the run (None: read in this process)."""
    trust: Any = None
    """``runs.trust.Trust``: temperature, prediction-set quantile and OOD statistics (None: raw softmax only)."""


def predict_slide_safely(ctx: SlideContext, slide: Path, csv_mpp: float | None) -> dict[str, Any]:
    """One slide's summary row under its lock: ``locked`` when another live process holds it."""
    from pathotune_cli.runs.per_slide.locks import slide_lock

    with slide_lock(ctx.out, slide.stem, COMMAND) as claim:
        if not claim.held:
            return locked_row(slide, claim)
        if claim.taken_over:
            note(ctx.report, claim.taken_over)
        return predict_slide(ctx, slide, csv_mpp)


def locked_row(slide: Path, claim: Any) -> dict[str, Any]:
    """The row of a slide another live process holds: skipped here, recorded by its owner."""
    owner = claim.owner.describe() if claim.owner else "another process"
    return {"slide": slide.name, "status": "locked", "tiles": 0, "seconds": 0.0, "resume": "",
            "error": f"{slide.name}: in progress in another process ({owner})"}


def predict_slide(ctx: SlideContext, slide: Path, csv_mpp: float | None) -> dict[str, Any]:
    """One slide's summary row: kept (``--resume``), predicted, or failed with its one-line error."""
    started = time.time()
    resume = ""
    try:
        key = slide_key(ctx, slide, csv_mpp)
        if ctx.opts.resume:
            outputs = list(output_paths(ctx.out, slide.stem, bool(ctx.opts.explain_top)).values())
            decision = decide(ctx.out, slide.stem, COMMAND, key, outputs)
            if decision.keep:
                note(ctx.report, f"{slide.name}: finished earlier with these settings, kept (--resume)")
                return {**decision.row, "resume": "kept", "seconds": 0.0}
            resume = decision.resume
        row = {**_predict_slide(ctx, slide, csv_mpp), "status": "ok", "error": ""}
        row["seconds"] = round(time.time() - started, 2)
        write_record(ctx.out, slide.stem, COMMAND, key, row)  # last: the slide is finished
        return {**row, "resume": resume}
    except Exception as exc:  # one broken slide never stops the others; the caller reports its line (SlideDone)
        error = describe(exc, ctx.out)[1]
    row = {"slide": slide.name, "status": "failed", "error": error, "tiles": 0,
           "seconds": round(time.time() - started, 2)}
    outputs = output_paths(ctx.out, slide.stem, explain=True).values()
    record_failure(ctx.out, slide.stem, COMMAND, outputs, lambda: slide_key(ctx, slide, csv_mpp), row)
    return {**row, "resume": resume}


def output_paths(out: Path, stem: str, explain: bool = False) -> dict[str, Path]:
    """Where one slide's predictions go (and its explanations, with ``--explain-top``)."""
    paths = {
        "csv": out / f"{stem}.predictions.csv",
        "geojson": out / f"{stem}.tiles.geojson",
        "heatmap": out / f"{stem}.heatmap.png",
    }
    if explain:
        paths["explain"] = out / f"{stem}.explain"
    return paths


def slide_key(ctx: SlideContext, slide: Path, csv_mpp: float | None) -> SlideKey:
    """Everything a slide's predictions depend on: the slide, the prompt file and every setting."""
    from pathotune_cli.runs.per_slide.inputs import geojson_for

    opts = ctx.opts
    return SlideKey(
        input=input_identity(slide),
        settings={
            "version": PREDICT_ALGORITHM,
            "prompts_sha256": ctx.prompts_sha256,
            "precision": ctx.placement.precision,
            "min_tissue": opts.min_tissue,
            "tissue": opts.tissue,
            "tissue_geojson": file_digest(geojson_for(slide, opts.tissue_geojson)),
            "coords": file_digest(coords_file_for(opts.coords, slide)),
            "csv_mpp": csv_mpp,
            "default_mpp": opts.default_mpp,
            "heatmap_class": opts.heatmap_class,
            "reader": opts.backend,
            "uncalibrated": opts.uncalibrated,
            "alpha": opts.alpha,
            "explain_top": opts.explain_top,
        },
    )


def coords_file_for(coords: Path | None, slide: Path) -> Path | None:
    """The coords ``.h5`` to reuse for a slide: the file given, or ``<stem>.h5`` in the folder given."""
    if coords is None:
        return None
    if coords.is_file():
        return coords
    candidate = coords / f"{slide.stem}.h5"
    if not candidate.is_file():
        raise BadInput(f"no coords file {candidate} for {slide.name}", "run `pathotune tile` on it, or drop --coords")
    return candidate


def _predict_slide(ctx: SlideContext, slide: Path, csv_mpp: float | None) -> dict[str, Any]:
    """Plan, infer, write the slide's files (renamed together), and return its summary row."""
    from pathotune_cli.runs.per_slide.inputs import geojson_for
    from pathotune_cli.wsi import draw_heatmap, plan_slide, save_png, write_tiles_geojson

    opts = ctx.opts
    plan = plan_slide(
        slide, target_mpp=ctx.tile_mpp, tile_size=ctx.tile_size, min_tissue=opts.min_tissue, tissue=opts.tissue,
        tissue_geojson=geojson_for(slide, opts.tissue_geojson), mpp_override=csv_mpp, default_mpp=opts.default_mpp,
        backend=opts.backend,
    )
    for line in plan.notes:
        warn(ctx.report, line)
    coords, level, read_size, footprint = plan.coords, plan.level, plan.read_size, plan.grid.patch_size_level0
    coords_file = coords_file_for(opts.coords, slide)
    if coords_file is not None:
        coords, level, read_size, footprint = _reuse_coords(coords_file, plan, ctx.tile_size)
    logits, ood = _infer_tiles(ctx, plan, slide.name, coords, level, read_size)
    columns = tile_columns(ctx.trust, logits, ood, ctx.class_names)
    probs = columns["probs"]
    paths = output_paths(ctx.out, slide.stem, bool(opts.explain_top))
    picture = draw_heatmap(plan.thumbnail, plan.level0_size, coords, footprint, probs, ctx.class_names,
                           show=opts.heatmap_class)
    with Staging() as staged:  # every output under a temporary name first, then renamed together
        _write_tile_csv(staged.temp(paths["csv"]), coords, footprint, columns, ctx.class_names)
        write_tiles_geojson(staged.temp(paths["geojson"]), coords, footprint, ctx.class_names, probs,
                            **geojson_extras(columns, ctx.class_names))
        save_png(staged.temp(paths["heatmap"]), picture)
        if opts.explain_top:
            _explain_top(ctx, plan.path, plan.backend, (coords, level, read_size), probs, staged.temp(paths["explain"]))
        record_path(ctx.out, slide.stem, COMMAND).unlink(missing_ok=True)
        staged.commit()
    row: dict[str, Any] = {
        "slide": slide.name, "tiles": int(len(coords)), "level": int(level), "mpp": round(plan.mpp, 5),
        "mpp_source": plan.mpp_source, "coords": str(coords_file) if coords_file else "tiled on the fly",
        "tissue_area_mm2": round(plan.tissue_area_mm2, 4),
    }
    return {**row, **_composition(probs, ctx.class_names, (footprint * plan.mpp / 1000.0) ** 2),
            **trust_fractions(columns)}


def geojson_extras(columns: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """The GeoJSON's trust columns, as ``wsi.write_tiles_geojson`` keywords.

    Measurements ``set_size`` and ``in_set_<class>`` (0/1), ``ood_score`` and ``ood`` (0/1); the set as text
    under ``metadata``; flagged tiles classified ``Uncertain``.
    """
    measurements: dict[str, np.ndarray] = {}
    extras: dict[str, Any] = {"measurements": measurements}
    if "sets" in columns:
        measurements["set_size"] = columns["set_size"]
        measurements.update({f"in_set_{c}": columns["sets"][:, i] for i, c in enumerate(classes)})
        extras["metadata"] = {"prediction_set": columns["prediction_set"]}
    if "ood" in columns:
        measurements.update(ood_score=columns["ood_score"], ood=columns["ood"])
        extras.update(uncertain=columns["ood"], uncertain_name=UNCERTAIN)
    return extras


def trust_fractions(columns: dict[str, Any]) -> dict[str, Any]:
    """A slide's flagged share and mean set size (empty cells where not computed)."""
    n = len(columns["probs"])
    ood = round(float(np.mean(columns["ood"])), 4) if "ood" in columns and n else ""
    size = round(float(np.mean(columns["set_size"])), 4) if "set_size" in columns and n else ""
    return {"ood_fraction": ood, "mean_set_size": size}


def _infer_tiles(ctx: SlideContext, plan: Any, name: str, coords: np.ndarray, level: int,
                 read_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (N, C) of the slide's tiles, read in batches, and their OOD scores (N,) where the file has them.

    The scores are computed batch by batch from the features of the same forward, so no (N, d) array is kept.
    """
    import torch

    from pathotune_cli.training.outputs import forward_with_features
    from pathotune_cli.wsi import iter_tile_batches

    ctx.report(TilesPlanned(name, len(coords)))
    logits = np.zeros((len(coords), len(ctx.class_names)), np.float32)
    ood = np.zeros(len(coords)) if ctx.trust.has_ood else None
    if not len(coords):
        return logits, ood
    batches = iter_tile_batches(
        plan.path, coords, level=level, read_size=read_size, tile_size=ctx.tile_size,
        batch_size=ctx.opts.batch_size, workers=0, backend=plan.backend, pool=ctx.pool,
    )
    for batch in batches:
        images = torch.from_numpy(batch.tiles).permute(0, 3, 1, 2).float().div_(255.0).to(ctx.placement.device)
        with torch.no_grad(), ctx.placement.autocast():
            z, f = forward_with_features(ctx.model, images, with_features=ood is not None)
        done = slice(batch.start, batch.start + len(batch.tiles))
        logits[done] = z.cpu().numpy()
        if ood is not None and f is not None:
            ood[done] = ctx.trust.ood_scores(f.cpu().numpy())
        ctx.report(TilesDone(name, batch.start + len(batch.tiles)))
    return logits, ood


def _explain_top(ctx: SlideContext, slide: Path, backend: str, where: tuple[np.ndarray, int, int],
                 probs: np.ndarray, folder: Path) -> None:
    """PNGs of the ``--explain-top`` most confident tiles of each class, and ``explanations.csv``.

    Into ``folder`` (a temporary the caller stages), named ``<CLASS>_<rank>_x<X>_y<Y>.png``.
    """
    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.explain import CSV_COLUMNS, CSV_NAME, explain_tiles, most_confident
    from pathotune_cli.wsi import read_batch
    from pathotune_cli.wsi.open import open_slide

    coords, level, read_size = where
    folder.mkdir(parents=True, exist_ok=True)
    chosen = most_confident(probs, ctx.opts.explain_top)
    rows: list[dict[str, Any]] = []
    with open_slide(slide, backend) as reader:
        for start in range(0, len(chosen), 8):
            part = chosen[start : start + 8]
            xy = coords[[i for _, _, i in part]]
            tiles = read_batch(reader, xy, level, read_size, ctx.tile_size)
            names = [f"{ctx.class_names[c]}_{rank}_x{int(x)}_y{int(y)}" for (c, rank, _), (x, y) in zip(part, xy,
                                                                                                        strict=True)]
            rows += explain_tiles(ctx.model, ctx.trust, tiles, names, [folder / f"{n}.png" for n in names],
                                  ctx.class_names, 3, ctx.placement.device)
    for row in rows:
        row["png"] = Path(row["png"]).name
    write_csv(folder / CSV_NAME, CSV_COLUMNS, ([r.get(c, "") for c in CSV_COLUMNS] for r in rows))


def _composition(probs: np.ndarray, classes: list[str], tile_area_mm2: float) -> dict[str, float]:
    """Each class's share of the tiles (by top class) and its area in mm2."""
    labels = probs.argmax(1) if len(probs) else np.zeros(0, int)
    row: dict[str, float] = {}
    for i, name in enumerate(classes):
        count = int((labels == i).sum())
        row[f"fraction_{name}"] = round(count / len(probs), 4) if len(probs) else 0.0
        row[f"area_mm2_{name}"] = round(count * tile_area_mm2, 4)
    return row


def _reuse_coords(path: Path, plan: Any, tile_size: int) -> tuple[np.ndarray, int, int, int]:
    from pathotune_cli.wsi import read_coords
    from pathotune_cli.wsi.grid import level_for_footprint
    from pathotune_cli.wsi.open import open_slide

    coords_file = read_coords(path)
    with open_slide(plan.path, plan.backend) as reader:
        downsamples = reader.level_downsamples
    footprint = coords_file.footprint(downsamples)
    level, read_size = level_for_footprint(downsamples, footprint, tile_size)
    return coords_file.coords, level, read_size, footprint


def _write_tile_csv(path: Path, coords: np.ndarray, footprint: int, columns: dict[str, Any],
                    classes: list[str]) -> None:
    probs, labels = columns["probs"], columns["labels"]
    header = ["x", "y", "w", "h", "class", *[f"prob_{c}" for c in classes], *extra_headers(columns)]
    rows = ([int(x), int(y), footprint, footprint, classes[int(k)], *[f"{v:.6f}" for v in p],
             *extra_values(columns, i)]
            for i, ((x, y), k, p) in enumerate(zip(coords, labels, probs, strict=True)))
    write_csv(path, header, rows)

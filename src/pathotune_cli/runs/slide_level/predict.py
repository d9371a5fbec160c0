"""``predict`` with a slide-level prompt file: one label per slide, and where the model looked.

Per slide: ``<stem>.predictions.csv`` (x, y, w, h, attention per tile), ``<stem>.tiles.geojson`` (the attention as
a measurement QuPath can colour by), ``<stem>.attention.png`` (the attention over the thumbnail, scaled to the
slide's most attended tile) and ``<stem>.top_tiles.png`` (the most attended tiles); ``summary.csv`` gains the
slide's ``label`` and ``prob_<class>`` (calibrated by the file's temperature unless ``--uncalibrated``) and, with
``--alpha``, its ``prediction_set`` and ``set_size``. With ``--explain-top K``, ``<stem>.explain/`` holds a PNG of
each of the K most attended tiles with its attribution map for the slide's class
(``training.attribution.slide_gradient_x_input``) and ``explanations.csv``. The same record, resume and failure
rules as tile-level ``predict``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import describe
from pathotune_cli.events import Reporter, SlideDone, SlidesStarted, SlideStarted, ignore, note, warn
from pathotune_cli.runs.options import kernel_spec

COMMAND = "predict"
TOP_TILES = 8
SLIDE_ALGORITHM = 1


def predict_slides(opts: Any, report: Reporter = ignore) -> Any:
    """Predict a slide-level task over every slide of ``opts``; returns a ``PredictResult``."""
    from pathotune_cli.engine import random_weights_warning
    from pathotune_cli.engine.slide_model import load_slide_model
    from pathotune_cli.files import remove_stale_temporaries, sha256_file
    from pathotune_cli.runs.per_slide.devices import shard_placement
    from pathotune_cli.runs.per_slide.inputs import read_slides_csv
    from pathotune_cli.runs.per_slide.merge import rebuild_summary
    from pathotune_cli.runs.predict import PredictResult, shard_inputs
    from pathotune_cli.runs.records import write_slides_record
    from pathotune_cli.runs.trust.apply import load_trust

    started = time.time()
    listed = read_slides_csv(opts.slides_csv) if opts.slides_csv else []
    everything, slides, images = shard_inputs(opts, [p for p, _ in listed], report)
    if images:
        warn(report, f"{len(images)} tile images skipped: a slide-level model predicts whole slides")
    model, file = load_slide_model(opts.prompts, opts.weights)
    header = file.header
    if random_weights_warning(model.tiles):
        warn(report, str(random_weights_warning(model.tiles)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated, alpha=opts.alpha)
    if trust.notice:
        warn(report, trust.notice)
    placement = shard_placement(opts.device, opts.precision, opts.shard)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    sha = sha256_file(file.path)
    settings = {"prompts": str(opts.prompts), "inputs": [str(p) for p in opts.inputs], "level": "slide"}
    write_slides_record(out, COMMAND, opts.shard, everything, settings, started, "running")
    rows = []
    report(SlidesStarted(len(slides)))
    for index, slide in enumerate(slides):
        report(SlideStarted(index, len(slides), slide.name))
        row = _one(model, header, trust, slide, opts, placement, out, sha, report)
        rows.append(row)
        done = row.get("resume") or f"{row.get('label')}, {row.get('tiles', 0)} tiles"
        detail = row["error"] if row["status"] != "ok" else done
        report(SlideDone(slide.name, row["status"], index + 1, len(slides), detail, seconds=row.get("seconds", 0.0)))
    rebuild_summary(out, COMMAND, rows, list(header.classes), report)
    result = PredictResult(out=out, prompts=file.path, task=header.task.name, classes=list(header.classes),
                           tile=header.tile.model_dump(), precision=placement.precision, slides=rows,
                           probabilities=trust.describe(),
                           seconds=round(time.time() - started, 2))
    write_slides_record(out, COMMAND, opts.shard, everything, settings, started, "finished", prompts_sha256=sha,
                        kernels=model.tiles.kernel_choices(), slides=len(rows), failed=result.failed)
    return result


def _one(model: Any, header: Any, trust: Any, slide: Path, opts: Any, placement: Any, out: Path, sha: str,
         report: Reporter) -> dict[str, Any]:
    """One slide under its lock (``locked`` when another live process is on it)."""
    from pathotune_cli.runs.per_slide.locks import slide_lock
    from pathotune_cli.runs.tile_level.predict import locked_row

    with slide_lock(out, slide.stem, COMMAND) as claim:
        if not claim.held:
            return locked_row(slide, claim)
        if claim.taken_over:
            note(report, claim.taken_over)
        return _predict_one(model, header, trust, slide, opts, placement, out, sha, report)


def _predict_one(model: Any, header: Any, trust: Any, slide: Path, opts: Any, placement: Any, out: Path, sha: str,
                 report: Reporter) -> dict[str, Any]:
    from pathotune_cli.runs.per_slide.resume import SlideKey, decide, input_identity, record_failure, write_record

    started = time.time()
    finals = _outputs(out, slide.stem, bool(opts.explain_top))
    settings = {"version": SLIDE_ALGORITHM, "prompts_sha256": sha, "precision": placement.precision,
                "calibrated": trust.calibrated, "alpha": opts.alpha, "explain_top": opts.explain_top}
    resume = ""
    try:
        key = SlideKey(input_identity(slide), settings)
        if opts.resume:
            decision = decide(out, slide.stem, COMMAND, key, list(finals.values()))
            if decision.keep:
                note(report, f"{slide.name}: finished earlier with these settings, kept (--resume)")
                return {**decision.row, "resume": "kept", "seconds": 0.0}
            resume = decision.resume
        row = {**_predict(model, header, trust, slide, opts.explain_top, placement, out, report),
               "status": "ok", "error": "",
               "seconds": round(time.time() - started, 2)}
        write_record(out, slide.stem, COMMAND, key, row)
        return {**row, "resume": resume}
    except Exception as exc:  # one broken slide must never stop the others
        error = describe(exc, out)[1]
    warn(report, error if slide.name in error else f"{slide.name}: {error}")
    row = {"slide": slide.name, "status": "failed", "tiles": 0, "error": error,
           "seconds": round(time.time() - started, 2)}
    record_failure(out, slide.stem, COMMAND, finals.values(), lambda: SlideKey(input_identity(slide), settings), row)
    return {**row, "resume": resume}


def _outputs(out: Path, stem: str, explain: bool = False) -> dict[str, Path]:
    paths = {"csv": out / f"{stem}.predictions.csv", "geojson": out / f"{stem}.tiles.geojson",
             "attention": out / f"{stem}.attention.png", "top": out / f"{stem}.top_tiles.png"}
    if explain:
        paths["explain"] = out / f"{stem}.explain"
    return paths


def _predict(model: Any, header: Any, trust: Any, slide: Path, explain_top: int, placement: Any, out: Path,
             report: Reporter) -> dict[str, Any]:
    from pathotune_cli.files import Staging, write_csv
    from pathotune_cli.runs.per_slide.resume import record_path
    from pathotune_cli.runs.slide_level.evaluate import slide_logits_of
    from pathotune_cli.runs.trust.apply import tile_columns
    from pathotune_cli.wsi import draw_heatmap, save_png
    from pathotune_cli.wsi.geojson import write_measured_tiles

    logits, attention, planned, features = slide_logits_of(model, slide, header, placement, report)
    columns = tile_columns(trust, logits[None], None, list(header.classes))
    probs = columns["probs"][0]
    plan, coords = planned.plan, planned.coords
    footprint = plan.grid.patch_size_level0
    scaled = attention / attention.max() if len(attention) and attention.max() > 0 else attention
    label = header.classes[int(probs.argmax())]
    finals = _outputs(out, slide.stem, bool(explain_top))
    with Staging() as staged:
        rows = ([int(x), int(y), footprint, footprint, f"{a:.6g}"] for (x, y), a in zip(coords, attention, strict=True))
        write_csv(staged.temp(finals["csv"]), ["x", "y", "w", "h", "attention"], rows)
        write_measured_tiles(staged.temp(finals["geojson"]), coords, footprint,
                             {"attention": attention, "attention_scaled": scaled})
        picture = draw_heatmap(plan.thumbnail, plan.level0_size, coords, footprint, scaled.reshape(-1, 1),
                               ["attention"], show="attention")
        save_png(staged.temp(finals["attention"]), picture)
        save_png(staged.temp(finals["top"]), _montage(planned, attention))
        if explain_top:
            _explain_top(model, trust, planned, features, attention, columns, list(header.classes), explain_top,
                         staged.temp(finals["explain"]))
        record_path(out, slide.stem, COMMAND).unlink(missing_ok=True)
        staged.commit()
    return {"slide": slide.name, "tiles": int(len(coords)), "label": label,
            **{f"prob_{c}": round(float(p), 6) for c, p in zip(header.classes, probs, strict=True)},
            **({"prediction_set": columns["prediction_set"][0], "set_size": int(columns["set_size"][0])}
               if "prediction_set" in columns else {}),
            "mpp": round(plan.mpp, 5), "mpp_source": plan.mpp_source,
            "tissue_area_mm2": round(plan.tissue_area_mm2, 4)}


def _montage(planned: Any, attention: np.ndarray, k: int = TOP_TILES) -> np.ndarray:
    """The ``k`` most attended tiles side by side, most attended first (a white strip for an empty slide)."""
    from pathotune_cli.runs.slide_level.tiles import read_tiles

    size = planned.tile_size
    if not len(attention):
        return np.full((size, size, 3), 255, np.uint8)
    top = np.argsort(-attention, kind="stable")[:k]
    tiles = read_tiles(planned, top).permute(0, 2, 3, 1).numpy()
    strip = np.full((size, len(top) * (size + 4) - 4, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        strip[:, i * (size + 4) : i * (size + 4) + size] = tile
    return strip


def _explain_top(model: Any, trust: Any, planned: Any, features: Any, attention: np.ndarray, columns: dict[str, Any],
                 classes: list[str], k: int, folder: Path) -> None:
    """PNGs of the ``k`` most attended tiles, each with its map for the slide's class, and ``explanations.csv``.

    Into ``folder`` (a temporary the caller stages), named ``<rank>_x<X>_y<Y>.png``; in full precision.
    """
    import torch

    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.slide_level.tiles import read_tiles
    from pathotune_cli.training.attribution import slide_gradient_x_input
    from pathotune_cli.training.trust_plots import save_explanation

    folder.mkdir(parents=True, exist_ok=True)
    top = np.argsort(-attention, kind="stable")[:k]
    probs, label = columns["probs"][0], int(columns["labels"][0])
    ranked = np.argsort(-probs, kind="stable")[:3]
    lines = [f"slide: {trust.describe()}"]
    if "prediction_set" in columns:
        lines.append(f"slide set at alpha {trust.alpha:g}: {columns['prediction_set'][0] or '(empty)'}")
    device = features.device
    rows = []
    for start in range(0, len(top), 8):
        part = top[start : start + 8]
        tiles = read_tiles(planned, part)
        maps, _ = slide_gradient_x_input(model, features.float(), tiles.float().div(255.0).to(device), part, label,
                                         trust.temperature if trust.calibrated else 1.0)
        with torch.no_grad():
            pixels = tiles.permute(0, 2, 3, 1).numpy()
        for j, i in enumerate(part):
            rank = start + j + 1
            x, y = (int(v) for v in planned.coords[i])
            name = f"{rank}_x{x}_y{y}.png"
            save_explanation(pixels[j], maps[j], [(classes[c], float(probs[c])) for c in ranked], folder / name,
                             title=f"{planned.path.name}: attended tile {rank} of {len(attention)}",
                             lines=[*lines, f"attention {attention[i]:.4g}; map: slide's {classes[label]}"])
            rows.append([rank, x, y, f"{attention[i]:.6g}", name, classes[label], f"{probs[label]:.6f}"])
    write_csv(folder / "explanations.csv", ["rank", "x", "y", "attention", "png", "slide_class", "slide_probability"],
              rows)

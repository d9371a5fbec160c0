"""``predict`` with a slide-level prompt file: one label per slide, and where the model looked.

Per slide: ``<stem>.predictions.csv`` (x, y, w, h, attention per tile), ``<stem>.tiles.geojson`` (the attention as
a measurement QuPath can colour by), ``<stem>.attention.png`` (the attention over the thumbnail, scaled to the
slide's most attended tile) and ``<stem>.top_tiles.png`` (the most attended tiles); ``summary.csv`` gains the
slide's ``label`` and ``prob_<class>``. The same record, resume and failure rules as tile-level ``predict``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import PathotuneError, os_error
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
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.predict import PredictResult, collect_inputs
    from pathotune_cli.runs.records import write_run_record
    from pathotune_cli.runs.slides import read_slides_csv

    started = time.time()
    listed = read_slides_csv(opts.slides_csv) if opts.slides_csv else []
    slides, images = collect_inputs([*opts.inputs, *(p for p, _ in listed)])
    if images:
        warn(report, f"{len(images)} tile images skipped: a slide-level model predicts whole slides")
    model, file = load_slide_model(opts.prompts, opts.weights)
    header = file.header
    if random_weights_warning(model.tiles):
        warn(report, str(random_weights_warning(model.tiles)))
    placement = place(opts.device, opts.precision)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    sha = sha256_file(file.path)
    rows = []
    report(SlidesStarted(len(slides)))
    for index, slide in enumerate(slides):
        report(SlideStarted(index, len(slides), slide.name))
        row = _one(model, header, slide, opts, placement, out, sha, report)
        rows.append(row)
        done = row.get("resume") or f"{row.get('label')}, {row.get('tiles', 0)} tiles"
        detail = row["error"] if row["status"] != "ok" else done
        report(SlideDone(slide.name, row["status"], index + 1, len(slides), detail, seconds=row.get("seconds", 0.0)))
    _write_summary(out / "summary.csv", rows, header.classes)
    result = PredictResult(out=out, prompts=file.path, task=header.task.name, classes=list(header.classes),
                           tile=header.tile.model_dump(), precision=placement.precision, slides=rows,
                           seconds=round(time.time() - started, 2))
    settings = {"prompts": str(opts.prompts), "inputs": [str(p) for p in opts.inputs], "level": "slide"}
    write_run_record(out, settings, started, prompts_sha256=sha, kernels=model.tiles.kernel_choices(),
                     slides=len(rows), failed=result.failed)
    return result


def _one(model: Any, header: Any, slide: Path, opts: Any, placement: Any, out: Path, sha: str,
         report: Reporter) -> dict[str, Any]:
    from pathotune_cli.runs.resume import SlideKey, decide, input_identity, record_failure, write_record

    started = time.time()
    finals = _outputs(out, slide.stem)
    settings = {"version": SLIDE_ALGORITHM, "prompts_sha256": sha, "precision": placement.precision}
    resume = ""
    try:
        key = SlideKey(input_identity(slide), settings)
        if opts.resume:
            decision = decide(out, slide.stem, COMMAND, key, list(finals.values()))
            if decision.keep:
                note(report, f"{slide.name}: finished earlier with these settings, kept (--resume)")
                return {**decision.row, "resume": "kept", "seconds": 0.0}
            resume = decision.resume
        row = {**_predict(model, header, slide, placement, out, report), "status": "ok", "error": "",
               "seconds": round(time.time() - started, 2)}
        write_record(out, slide.stem, COMMAND, key, row)
        return {**row, "resume": resume}
    except PathotuneError as exc:
        error = exc.one_line()
    except OSError as exc:  # a full disk, a folder that vanished: the line names the path and the fix
        error = os_error(exc, out).one_line()
    except Exception as exc:  # one broken slide must never stop the others
        error = f"{type(exc).__name__}: {exc}"
    warn(report, error if slide.name in error else f"{slide.name}: {error}")
    row = {"slide": slide.name, "status": "failed", "tiles": 0, "error": error,
           "seconds": round(time.time() - started, 2)}
    record_failure(out, slide.stem, COMMAND, finals.values(), lambda: SlideKey(input_identity(slide), settings), row)
    return {**row, "resume": resume}


def _outputs(out: Path, stem: str) -> dict[str, Path]:
    return {"csv": out / f"{stem}.predictions.csv", "geojson": out / f"{stem}.tiles.geojson",
            "attention": out / f"{stem}.attention.png", "top": out / f"{stem}.top_tiles.png"}


def _predict(model: Any, header: Any, slide: Path, placement: Any, out: Path, report: Reporter) -> dict[str, Any]:
    from pathotune_cli.files import Staging, write_csv
    from pathotune_cli.runs.evaluate_slides import slide_probability
    from pathotune_cli.runs.resume import record_path
    from pathotune_cli.wsi import draw_heatmap, save_png
    from pathotune_cli.wsi.geojson import write_measured_tiles

    probs, attention, planned = slide_probability(model, slide, header, placement, report)
    plan, coords = planned.plan, planned.coords
    footprint = plan.grid.patch_size_level0
    scaled = attention / attention.max() if len(attention) and attention.max() > 0 else attention
    label = header.classes[int(probs.argmax())]
    finals = _outputs(out, slide.stem)
    with Staging() as staged:
        rows = ([int(x), int(y), footprint, footprint, f"{a:.6g}"] for (x, y), a in zip(coords, attention, strict=True))
        write_csv(staged.temp(finals["csv"]), ["x", "y", "w", "h", "attention"], rows)
        write_measured_tiles(staged.temp(finals["geojson"]), coords, footprint,
                             {"attention": attention, "attention_scaled": scaled})
        picture = draw_heatmap(plan.thumbnail, plan.level0_size, coords, footprint, scaled.reshape(-1, 1),
                               ["attention"], show="attention")
        save_png(staged.temp(finals["attention"]), picture)
        save_png(staged.temp(finals["top"]), _montage(planned, attention))
        record_path(out, slide.stem, COMMAND).unlink(missing_ok=True)
        staged.commit()
    return {"slide": slide.name, "tiles": int(len(coords)), "label": label,
            **{f"prob_{c}": round(float(p), 6) for c, p in zip(header.classes, probs, strict=True)},
            "mpp": round(plan.mpp, 5), "mpp_source": plan.mpp_source,
            "tissue_area_mm2": round(plan.tissue_area_mm2, 4)}


def _montage(planned: Any, attention: np.ndarray, k: int = TOP_TILES) -> np.ndarray:
    """The ``k`` most attended tiles side by side, most attended first (a white strip for an empty slide)."""
    from pathotune_cli.runs.slide_tiles import read_tiles

    size = planned.tile_size
    if not len(attention):
        return np.full((size, size, 3), 255, np.uint8)
    top = np.argsort(-attention, kind="stable")[:k]
    tiles = read_tiles(planned, top).permute(0, 2, 3, 1).numpy()
    strip = np.full((size, len(top) * (size + 4) - 4, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        strip[:, i * (size + 4) : i * (size + 4) + size] = tile
    return strip


def _write_summary(path: Path, rows: list[dict[str, Any]], classes: list[str]) -> None:
    from pathotune_cli.files import write_csv
    from pathotune_cli.runs.resume import folder_rows

    folder = {r["slide"]: r for r in folder_rows(path.parent, COMMAND)}
    folder.update({r["slide"]: r for r in rows})
    header = ["slide", "status", "label", *[f"prob_{c}" for c in classes], "tiles", "mpp", "mpp_source",
              "tissue_area_mm2", "seconds", "resume", "error"]
    write_csv(path, header, ([folder[s].get(k, "") for k in header] for s in sorted(folder)))

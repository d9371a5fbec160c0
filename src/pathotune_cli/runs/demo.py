"""``pathotune demo``: the whole flow on data it generates and a tiny random backbone; offline, anywhere.

Steps: generate training slides with QuPath-style annotation files and cut their labelled tiles into
``labels.csv`` (``runs.tile_level.demo_labels``), generate test tiles and a pyramidal slide made of regions of the demo
classes, tune ``pathotune`` prompts on ``tiny-random`` from ``labels.csv`` (tiles read from the slides), evaluate
on fresh tiles, tile the slide, predict over it from the tile step's coordinates, score the slide (the share of
tiles that get the class of the region they lie in), and export the model to ONNX and TorchScript with their
checks and model cards.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.files import atomic_write
from pathotune_cli.runs.slide_level.demo import SlideLevelDemo, slide_level_demo

if TYPE_CHECKING:
    from pathotune_cli.runs.export import ExportResult
    from pathotune_cli.runs.results import EvalResult, TuneResult

DEMO_SLIDE_SIZE = (1792, 1344)  # level-0 pixels at 0.5 µm/px: 16 x 12 demo tiles of 112 px
DEMO_MPP = 0.5


@dataclass(frozen=True)
class DemoTune:
    """The demo's tuning run: where, how big, how long, its validation metrics."""

    run: str
    prompts: str
    prompts_bytes: int
    trainable_parameters: int
    epochs_run: int
    validation: dict[str, object] | None


@dataclass(frozen=True)
class DemoEval:
    """The demo's evaluation on fresh tiles: where, and each metric's value."""

    out: str
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class DemoSlide:
    """The demo slide, tiled and predicted: tiles, share in their region's class, and its outputs."""

    tiles: int
    region_agreement: float
    coords: str
    overview: str
    csv: str
    geojson: str
    heatmap: str
    summary: str


@dataclass(frozen=True)
class DemoResult:
    """What the demo made and measured."""

    out: Path
    seconds: float
    tune: DemoTune
    eval: DemoEval
    slide: DemoSlide
    export: dict[str, float | str]
    """Per format: the largest probability difference of its check, or why it was skipped."""
    artifacts: dict[str, str] = field(default_factory=dict)
    slide_level: SlideLevelDemo | None = None
    """The slide-level part: test AUROC, share of the top-attended tiles in the planted tumour, paths."""

    def to_dict(self) -> dict[str, object]:
        """The result as plain data."""
        return {**asdict(self), "out": str(self.out)}


def demo_run(out: Path, epochs: int = 6, seed: int = 0, report: Reporter = ignore) -> DemoResult:
    """Run every step; returns the metrics and where each artifact is."""
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.export import export_all
    from pathotune_cli.runs.tile_level.demo_labels import demo_labels
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    started = time.time()
    out = Path(out)
    data = demo_labels(out / "train-slides", seed=seed, report=report)  # annotated slides -> labels.csv
    test = write_demo_tiles(out / "tiles" / "test", per_class=20, seed=seed + 1)
    slide = write_demo_slide(out / "slides" / "demo-slide.tiff", seed=seed)
    note(report, f"generated synthetic test tiles in {out / 'tiles'} and a slide {slide}")
    config = resolve_config(TuneOptions(
        preset="demo", data=data, backbone="tiny-random", method="pathotune", out=out / "run", epochs=epochs,
        seed=seed, sets=("train.lr=3e-3",),
    ))
    tuned = tune_run(config, resume=True, report=report)  # a rerun continues or reuses the run it finds
    evaluated = eval_run(EvalOptions(prompts=tuned.prompts, data=test, out=out / "eval", seed=seed), report)
    slide_result = _slide_steps(out, slide, tuned.prompts, report)
    exports = export_all(tuned.prompts, check_data=test, report=report, out_dir=out / "export",
                         metrics=evaluated.out / "metrics.json")
    slide_level = slide_level_demo(out, seed=seed, report=report)
    reports = _reports(out, report)
    return DemoResult(
        out=out,
        seconds=round(time.time() - started, 1),
        tune=DemoTune(run=str(tuned.run), prompts=str(tuned.prompts), prompts_bytes=tuned.prompts_bytes,
                      trainable_parameters=tuned.trainable_parameters, epochs_run=tuned.epochs_run,
                      validation=tuned.validation),
        eval=DemoEval(out=str(evaluated.out), metrics=evaluated.metric_values()),
        slide=slide_result,
        export={f: d if isinstance(d, str) else (d.check or {}).get("max_abs_diff", "not checked")
                for f, d in exports.items()},
        artifacts={**_artifacts(out, data, test, slide, tuned, evaluated, slide_result, exports),
                   "slide-level prompt file": slide_level.prompts,
                   "slide-level attention": slide_level.attention, **reports},
        slide_level=slide_level,
    )


def _reports(out: Path, report: Reporter) -> dict[str, str]:
    """``report.html`` of the demo's predict folders (``eval`` writes its own): one offline page each."""
    from pathotune_cli.runs.report import write_report_quietly

    pages = {"slide report (open in a browser)": write_report_quietly(out / "predict", report),
             "slide-level report": write_report_quietly(out / "slide-level" / "predict", report)}
    pages.update({"test tiles report": out / "eval" / "report.html",
                  "slide-level eval report": out / "slide-level" / "eval" / "report.html"})
    return {name: str(path) for name, path in pages.items() if path is not None and Path(path).is_file()}


def _artifacts(out: Path, data: Path, test: Path, slide: Path, tuned: TuneResult, evaluated: EvalResult,
               slide_result: DemoSlide, exports: dict[str, ExportResult | str]) -> dict[str, str]:
    """Where each thing the demo made is, for the closing table."""
    made = {f: d for f, d in exports.items() if not isinstance(d, str)}
    return {
        "training labels (tiles in slides)": str(data),
        "test tiles": str(test),
        "prompt file": str(tuned.prompts),
        "run config": str(out / "run" / "config.yaml"),
        "history": str(out / "run" / "history.csv"),
        "validation metrics": str(out / "run" / "metrics.json"),
        "test metrics": str(evaluated.out / "metrics.json"),
        "confusion matrix": str(evaluated.out / "confusion_matrix.png"),
        "demo slide": str(slide),
        "tile coordinates": slide_result.coords,
        "tile overview": slide_result.overview,
        "slide predictions": slide_result.csv,
        "QuPath GeoJSON": slide_result.geojson,
        "heatmap": slide_result.heatmap,
        "slide summary": slide_result.summary,
        **{f"{f} model": str(d.export) for f, d in made.items()},
        **{f"{f} model card": str(d.card_md) for f, d in made.items()},
    }


def write_demo_slide(path: Path, seed: int = 0) -> Path:
    """A generic JPEG-tiled pyramid TIFF, mpp in its resolution tags, of four class regions on glass."""
    from pathotune_cli.demo_data import slide_tile
    from pathotune_cli.wsi import write_pyramid_tiff

    if path.is_file():
        return path
    width, height = DEMO_SLIDE_SIZE

    def write(temp: Path) -> None:
        write_pyramid_tiff(temp, width, height, lambda x, y, w, h: slide_tile(x, y, w, h, width, height, seed),
                           mpp=DEMO_MPP, tile=256, factor=2, min_level_size=256, quality=92)

    return atomic_write(path, write)


def slide_agreement(predictions_csv: Path, class_names: list[str]) -> float:
    """Share of predicted tiles whose class is the class of the region under the tile's centre."""
    import numpy as np

    from pathotune_cli.demo_data import region_class

    width, height = DEMO_SLIDE_SIZE
    agree = total = 0
    with predictions_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            cx = int(row["x"]) + int(row["w"]) / 2
            cy = int(row["y"]) + int(row["h"]) / 2
            region = int(region_class(np.array(cx), np.array(cy), width, height))
            if region < 0:
                continue
            total += 1
            agree += row["class"] == class_names[region]
    return agree / total if total else 0.0


def _slide_steps(out: Path, slide: Path, prompts: Path, report: Reporter) -> DemoSlide:
    from pathotune_cli.demo_data import DEMO_CLASSES
    from pathotune_cli.runs.predict import PredictOptions, predict_run
    from pathotune_cli.runs.slide_level.demo import own_predict_folder
    from pathotune_cli.runs.tile import TileConfig, tile_run

    tiles_out = out / "slide-tiles"
    tiled = tile_run(
        TileConfig(slides=(slide,), out=tiles_out, target_mpp=DEMO_MPP, tile_size=112, workers=0, resume=True)
    )
    row = tiled.rows[0]
    if row.status == "failed":
        raise RuntimeError(f"demo slide failed to tile: {row.error}")
    coords = tiles_out / f"{slide.stem}.h5"
    own_predict_folder(out / "predict", prompts, report)
    predicted = predict_run(
        PredictOptions(prompts=prompts, inputs=(slide,), out=out / "predict", coords=coords, workers=0), report
    )
    slide_row = predicted.slides[0]
    if slide_row.status != "ok":
        raise RuntimeError(f"demo slide failed to predict: {slide_row.error}")
    csv_path = out / "predict" / f"{slide.stem}.predictions.csv"
    agreement = slide_agreement(csv_path, list(DEMO_CLASSES))
    note(report, f"demo slide: {slide_row.tiles} tiles, {agreement:.1%} in their region's class")
    return DemoSlide(
        tiles=slide_row.tiles,
        region_agreement=agreement,
        coords=str(coords),
        overview=str(tiles_out / f"{slide.stem}.thumb.png"),
        csv=str(csv_path),
        geojson=str(out / "predict" / f"{slide.stem}.tiles.geojson"),
        heatmap=str(out / "predict" / f"{slide.stem}.heatmap.png"),
        summary=str(out / "predict" / "summary.csv"),
    )

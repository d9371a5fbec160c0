"""The slide-level half of ``pathotune demo``: generated slides, a model tuned end to end, where it looks.

Half the slides carry a planted tumour region; the model is tuned end to end from slide labels; the demo reports
its slide AUROC on held-out slides and whether it looks at the tumour.

The score of where it looks: for every positive test slide, the share of its 8 most attended tiles whose centre
lies in the planted region (a region holds 11-15 of a slide's ~55 tissue tiles, so chance is about a quarter).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pathotune_cli.events import Reporter, ignore, note

if TYPE_CHECKING:
    import numpy as np

SLIDE_SIZE = (1120, 896)  # level-0 pixels at 0.5 µm/px: 10 x 8 tiles of 112 px, about 55 on tissue
SLIDES = 24  # 12 to train, 4 to validate, 8 to test; odd indices carry a tumour
MPP = 0.5


@dataclass(frozen=True)
class SlideLevelDemo:
    """The slide-level demo's scores and where its outputs are."""

    prompts: str
    test_auroc: float | None
    top8_in_tumour: float
    """Share of the 8 most attended tiles of each positive test slide that lie in the planted tumour."""
    eval: str
    predict: str
    attention: str

def slide_level_demo(out: Path, epochs: int = 4, seed: int = 0, report: Reporter = ignore) -> SlideLevelDemo:
    """Generate, tune end to end, evaluate and predict; returns the scores and where things are."""
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.predict import PredictOptions, predict_run
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    folder = Path(out) / "slide-level"
    slides = write_planted_slides(folder / "slides", seed)
    train_csv, test_csv = folder / "slides.csv", folder / "test.csv"
    _write_csvs(slides, train_csv, test_csv)
    note(report, f"generated {len(slides)} slides ({SLIDES // 2} with a planted tumour) in {folder / 'slides'}")
    config = resolve_config(TuneOptions(
        preset="demo-slides", data=train_csv, backbone="tiny-random", method="pathotune", out=folder / "run",
        epochs=epochs, seed=seed, sets=("mil.tiles_per_slide=32", "mil.chunk=32", "train.patience=null"),
    ))
    tuned = tune_run(config, resume=(folder / "run" / "prompts.safetensors").exists(), report=report)
    evaluated = eval_run(EvalOptions(prompts=tuned.prompts, data=test_csv, out=folder / "eval", seed=seed), report)
    positives = [path for i, path in enumerate(slides) if i >= 16 and i % 2 == 1]
    own_predict_folder(folder / "predict", tuned.prompts, report)
    predicted = predict_run(PredictOptions(prompts=tuned.prompts, inputs=tuple(positives), out=folder / "predict"),
                            report)
    looked = attention_in_planted(folder / "predict", positives, seed)
    auroc = evaluated.metric_values()["macro_auroc"]
    note(report, f"slide-level demo: test AUROC {auroc:.3f}; {looked:.0%} of the 8 most attended tiles of "
                 "positive slides lie in the planted tumour")
    return SlideLevelDemo(
        prompts=str(tuned.prompts), test_auroc=auroc, top8_in_tumour=looked,
        eval=str(evaluated.out), predict=str(predicted.out),
        attention=str(folder / "predict" / f"{positives[0].stem}.attention.png"),
    )


def write_planted_slides(folder: Path, seed: int = 0, count: int = SLIDES,
                         size: tuple[int, int] = SLIDE_SIZE) -> list[Path]:
    """The demo's slides, ``s00.tiff`` ... (odd indices with a tumour region); kept when already written."""
    from pathotune_cli.demo_data import planted_tile, tumour_region
    from pathotune_cli.files import atomic_write
    from pathotune_cli.wsi import write_pyramid_tiff

    width, height = size
    paths = []
    for i in range(count):
        path = folder / f"s{i:02d}.tiff"
        tumour = tumour_region(i, width, height, seed) if i % 2 else None

        def draw(x: int, y: int, w: int, h: int, tumour: tuple[float, float, float] | None = tumour,
                 i: int = i) -> np.ndarray:
            return planted_tile(x, y, w, h, width, height, tumour, seed=seed * 1000 + i)

        if not path.is_file():
            atomic_write(path, lambda temp, draw=draw: write_pyramid_tiff(
                temp, width, height, draw, mpp=MPP, tile=256, factor=2, min_level_size=256, quality=92))
        paths.append(path)
    return paths


def attention_in_planted(predict_out: Path, positives: list[Path], seed: int = 0, k: int = 8) -> float:
    """Share of the ``k`` most attended tiles of the positive slides whose centre is in the planted tumour."""
    import numpy as np

    from pathotune_cli.demo_data import DEMO_CLASSES, planted_class, tumour_region

    width, height = SLIDE_SIZE
    hits = total = 0
    for path in positives:
        index = int(path.stem[1:])
        with (predict_out / f"{path.stem}.predictions.csv").open(newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: -float(r["attention"]))[:k]
        for row in rows:
            cx, cy = int(row["x"]) + int(row["w"]) / 2, int(row["y"]) + int(row["h"]) / 2
            region = planted_class(np.array(cx), np.array(cy), width, height, tumour_region(index, width, height, seed))
            hits += int(region) == DEMO_CLASSES.index("tumor")
            total += 1
    return hits / total if total else 0.0


def _write_csvs(slides: list[Path], train_csv: Path, test_csv: Path) -> None:
    from pathotune_cli.files import write_csv

    def label(i: int) -> str:
        return "tumor" if i % 2 else "normal"

    write_csv(train_csv, ("slide", "label", "split"),
              [(p.relative_to(train_csv.parent), label(i), "val" if 12 <= i < 16 else "train")
               for i, p in enumerate(slides) if i < 16])
    write_csv(test_csv, ("slide", "label"), [(p.relative_to(test_csv.parent), label(i))
                                              for i, p in enumerate(slides) if i >= 16])


def own_predict_folder(folder: Path, prompts: Path, report: Reporter = ignore) -> None:
    """The demo's predict folder, emptied when it holds an earlier demo run's predictions (another prompt file).

    Only for the demo, whose folders are its own: ``predict`` itself refuses a folder of another model.
    """
    import shutil

    from pathotune_cli.errors import BadInput
    from pathotune_cli.files import sha256_file
    from pathotune_cli.runs.predict import one_model_per_folder

    if not folder.is_dir():
        return
    try:
        one_model_per_folder(folder, prompts, sha256_file(prompts))
    except BadInput:
        note(report, f"{folder}: the predictions of an earlier demo run, replaced")
        shutil.rmtree(folder)

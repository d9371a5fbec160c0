"""``eval`` of a slide-level prompt file on a slides CSV: metrics over slides with bootstrap intervals.

Per slide the tiles are cut as ``tile`` cuts them, encoded by the file's tile encoder and aggregated; the
metrics (AUROC, balanced accuracy, macro F1, Cohen's kappa, quadratic for ordinal tasks) resample slides.
Writes ``metrics.json``, ``predictions.csv`` (one row per slide), ``confusion_matrix.png`` and ``roc_curve.png``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.options import kernel_spec
from pathotune_cli.runs.per_slide.rows import SlideInput
from pathotune_cli.runs.per_slide.tiling import PlannedSlide, Tiling, plan
from pathotune_cli.runs.results import EvalOptions, EvalResult
from pathotune_cli.training.slide_data import SlideItem

if TYPE_CHECKING:
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.engine.slide_model import SlideModel
    from pathotune_cli.training.slide_data import SlideSet


def eval_slides(opts: EvalOptions, report: Reporter = ignore) -> EvalResult:
    """Evaluate a slide-level prompt file on ``opts.data`` (a slides CSV).

    Raises:
        BadInput: a tile-level file, bad CSV rows, an unreadable slide.
    """
    from pathotune_cli.engine import random_weights_warning
    from pathotune_cli.engine.slide_model import load_slide_model
    from pathotune_cli.files import write_json
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.records import provenance
    from pathotune_cli.runs.trust.apply import load_trust
    from pathotune_cli.runs.trust.report import save_reliability, trust_report
    from pathotune_cli.training.slide_data import read_slide_table

    started = time.time()
    model, file = load_slide_model(opts.prompts, opts.weights)
    header, task = file.header, file.header.task
    if random_weights_warning(model.tiles):
        warn(report, str(random_weights_warning(model.tiles)))
    slides = read_slide_table(opts.data, task, None, lambda text: warn(report, text))
    out = opts.out_folder  # made and test-written by eval_run before anything loaded
    placement = place(opts.device, opts.precision)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    note(report, f"evaluating {len(slides)} slides with {header.mil.aggregator if header.mil else '?'} on {task.name}")
    trust = load_trust(file, uncalibrated=opts.uncalibrated)
    if trust.notice:
        warn(report, trust.notice)
    tiling = Tiling(header.tile.mpp, header.tile.size, default_mpp=opts.default_mpp)
    logits = np.stack([slide_logits_of(model, planned_slide(item, tiling), placement, report).logits
                       for item in slides.items])
    probs = trust.probabilities(logits)
    scores = write_slide_report(out, slides, probs, task, seed=opts.seed, bootstrap=opts.bootstrap, title=task.name)
    trusted = trust_report(logits, None, slides.labels, trust, opts.bootstrap, opts.seed)
    result = EvalResult(
        prompts=file.path, data=Path(opts.data), task=task.name, method=header.method,
        backbone=header.backbone.preset.name, precision=placement.precision, scores=scores, trust=trusted,
        counts=slides.counts(), out=out, level="slide",
    )
    write_json(out / "metrics.json", {**result.to_dict(), "level": "slide", "provenance": provenance()})
    save_reliability(trusted, out / "reliability_diagram.png", title=f"{task.name}: {len(slides)} slides")
    return EvalResult(**{**result.__dict__, "seconds": round(time.time() - started, 2)})


def slide_logits_of(model: SlideModel, slide: PlannedSlide, placement: Placement, report: Reporter = ignore,
                    batch_size: int = 64, max_damaged: float | None = 0.05) -> SlideLogits:
    """A slide through a slide-level model: its logits, where it looked, and the tiles that decoded."""
    import torch

    from pathotune_cli.runs.slide_level.tiles import slide_features

    encoded = slide_features(model, slide, placement, batch_size, report, max_damaged)
    features = torch.from_numpy(encoded.values[0]).to(placement.device)
    with torch.no_grad():
        logits, attention = model(features)
    kept = dataclasses.replace(slide, coords=encoded.coords(slide))
    return SlideLogits(logits.float().cpu().numpy(), attention.float().cpu().numpy(), features, kept,
                       encoded.damage.count)


@dataclass(frozen=True)
class SlideLogits:
    """One slide through a slide-level model."""

    logits: np.ndarray
    """(C,) the slide's logits."""
    attention: np.ndarray
    """(N,) attention over the tiles that decoded."""
    features: Any
    """(N, d) their features, a tensor on the model's device."""
    slide: PlannedSlide
    """The slide with only the tiles that decoded."""
    tiles_damaged: int


def planned_slide(item: SlideItem, tiling: Tiling) -> PlannedSlide:
    """A labelled slide's tiles, cut as every command cuts them (its CSV mpp, ``--default-mpp``, the tissue rule).

    Raises:
        BadInput: only the slide's features are listed, or the slide cannot be read.
    """
    if item.path is None:
        raise BadInput(f"{item.slide_id}: a slide-level model reads the slide itself, and only its features are "
                       "listed", "list the slide files in the CSV")
    return plan(SlideInput(item.path, item.mpp), tiling)


def write_slide_report(out: Path, slides: SlideSet, probs: np.ndarray, task: TaskPreset, seed: int = 0,
                       bootstrap: int = 1000,
                       prefix: str = "", title: str = "") -> dict[str, Any]:
    """Slide-level metrics with intervals, predictions, confusion matrix and ROC curves; returns the metrics."""
    from pathotune_cli.files import write_csv, write_json
    from pathotune_cli.training.metrics import classification_metrics
    from pathotune_cli.training.plots import save_confusion_matrix, save_roc_curves

    labels = slides.labels
    scores = classification_metrics(labels, probs, task.class_names, ordinal=task.ordinal, bootstrap=bootstrap,
                                    seed=seed)
    if prefix:  # during tune: the validation metrics, as the tile-level run writes them
        write_json(out / "metrics.json", scores)
    names = task.class_names
    rows = [[item.slide_id, item.patient, names[item.label], names[int(p.argmax())], *[f"{v:.6f}" for v in p]]
            for item, p in zip(slides.items, probs, strict=True)]
    write_csv(out / f"{prefix}predictions.csv", ["slide", "patient", "label", "predicted",
                                                 *[f"prob_{c}" for c in names]], rows)
    save_confusion_matrix(scores["confusion_matrix"], names, out / "confusion_matrix.png", title=title)
    save_roc_curves(labels, probs, names, out / "roc_curve.png", title=title)
    return scores


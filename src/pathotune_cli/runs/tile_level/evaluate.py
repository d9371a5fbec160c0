"""Tile-level ``eval``: a tile classifier against labelled tiles, with bootstrap intervals and its trust report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.options import kernel_spec
from pathotune_cli.runs.results import EvalOptions, EvalResult

if TYPE_CHECKING:
    import numpy as np

    from pathotune_cli.engine.header import PromptHeader
    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.hardware import Placement
    from pathotune_cli.runs.trust.apply import Trust
    from pathotune_cli.training.data import LabelledSet


def eval_tiles(opts: EvalOptions, report: Reporter = ignore) -> EvalResult:
    """Evaluate a tile-level prompt file on labelled tiles (a folder or a CSV) into ``opts.out_folder``.

    Raises:
        BadInput: a damaged prompt file, another backbone's weights, bad data.
    """
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.files import Staging, write_csv, write_json
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.records import provenance
    from pathotune_cli.runs.tile_level.labels import discover_data, slide_overlap, store_for
    from pathotune_cli.runs.trust.apply import load_trust
    from pathotune_cli.runs.trust.report import save_reliability, trust_report
    from pathotune_cli.training.metrics import classification_metrics, predictions_table
    from pathotune_cli.training.outputs import model_outputs
    from pathotune_cli.training.plots import save_confusion_matrix

    out = opts.out_folder
    started = time.time()
    model, file = load_prompted_model(opts.prompts, opts.weights)
    header, task = file.header, file.header.task
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated)
    if trust.notice:
        warn(report, trust.notice)
    data = discover_data(opts.data, task, lambda text: warn(report, text))  # tiles on disk, or in slides
    if data.rows is None:
        overlap, counts = training_overlap(file.path, data.paths)
    else:
        overlap, counts = slide_overlap(file.path, data), None
    if overlap:
        warn(report, overlap)
    placement = place(opts.device, opts.precision)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    note(report, f"evaluating {len(data)} tiles with {header.method} on {task.name}: {trust.describe()}")
    outputs = model_outputs(model, store_for(data, model.backbone.input_size), opts.batch_size, placement,
                            with_features=trust.has_ood)
    probs = trust.probabilities(outputs.logits)
    scores = classification_metrics(data.labels, probs, task.class_names, ordinal=task.ordinal,
                                    bootstrap=opts.bootstrap, seed=opts.seed)
    trusted = trust_report(outputs.logits, outputs.features, data.labels, trust, opts.bootstrap, opts.seed)
    robust = _robustness(opts, model, data, probs, scores, trust, placement, report) if opts.robustness else None
    modality = _modality(header, data, model.backbone.input_size, report)
    result = EvalResult(
        prompts=file.path, data=Path(opts.data), task=task.name, method=header.method,
        backbone=header.backbone.preset.name, precision=placement.precision, scores=scores, trust=trusted,
        counts=data.counts(), out=out, seconds=round(time.time() - started, 2), tuning_overlap=counts,
        robustness=robust, modality=modality,
    )
    rows = predictions_table(data.labels, probs, task.class_names, [str(p) for p in data.paths])
    with Staging() as staged:  # the files appear together or not at all
        write_json(staged.temp(out / "metrics.json"), {**result.to_dict(), "provenance": provenance()})
        write_csv(staged.temp(out / "predictions.csv"), list(rows[0]), (list(r.values()) for r in rows))
        save_confusion_matrix(scores["confusion_matrix"], task.class_names, staged.temp(out / "confusion_matrix.png"),
                              title=task.name)
        save_reliability(trusted, staged.temp(out / "reliability_diagram.png"),
                         title=f"{task.name}: {len(data)} tiles")
        if robust is not None:
            from pathotune_cli.runs.tile_level.robustness import save_robustness_plot

            save_robustness_plot(robust, staged.temp(out / "robustness.png"), title=f"{task.name}: {len(data)} tiles")
        staged.commit()
    return result


def training_overlap(prompts: Path, paths: list[Path]) -> tuple[str | None, dict[str, int] | None]:
    """(a warning when evaluation tiles are also in the prompt file's training or validation data, the counts).

    ``tune`` writes every file it read, with its sha256, to ``data_manifest.csv`` beside the prompt file; tiles
    are compared by content, so a copy under another name counts. The warning is None without overlap; the counts
    (``train``, ``val``, ``items``) are None when there is no manifest to compare with.
    """
    import csv

    from pathotune_cli.files import sha256_file

    manifest = Path(prompts).resolve().parent / "data_manifest.csv"
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            seen = {row.get("sha256"): row.get("split") or "train" for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None, None
    splits = [seen[digest] for digest in (sha256_file(p) for p in paths) if digest in seen]
    counts = {"train": splits.count("train"), "val": splits.count("val"), "items": len(paths)}
    if not splits:
        return None, counts
    found = {s: n for s, n in counts.items() if s != "items" and n}
    which = " and ".join(f"{n} in its {'training' if s == 'train' else 'validation'} data" for s, n in found.items())
    return (f"{len(splits)} of {len(paths)} evaluation tiles are also in the data this prompt file was tuned on "
            f"({which}, by sha256 in {manifest}): these metrics overstate how it does on new tiles"), counts


def _modality(header: PromptHeader, data: LabelledSet, size: int, report: Reporter) -> dict[str, Any] | None:
    """A sample of the tiles against the training tiles' stain statistics; a warning line when they differ."""
    from pathotune_cli.engine.stain_stats import check_modality, modality_warning, sample_index
    from pathotune_cli.runs.tile_level.labels import store_for

    if header.stain_stats is None or not len(data):
        return None
    index = sample_index(len(data))
    tiles = store_for(data, size).batch(list(index))
    check = check_modality(header.stain_stats, tiles.permute(0, 2, 3, 1).numpy())
    line = modality_warning(f"tile set {data.source}", check, strict_hint=False)
    if line:
        warn(report, line)
    return check._asdict()


def _robustness(opts: EvalOptions, model: PromptedModel, data: LabelledSet, probs: np.ndarray,
                scores: dict[str, Any], trust: Trust, placement: Placement, report: Reporter) -> dict[str, Any]:
    """``--robustness``: the metrics under controlled shifts, and per site (``runs.tile_level.robustness``)."""
    from pathotune_cli.runs.tile_level.labels import store_for
    from pathotune_cli.runs.tile_level.robustness import robustness_report, sites_of

    store = store_for(data, model.backbone.input_size)
    return robustness_report(model, store, data.labels, data.class_names, trust.probabilities, scores,
                             probs, placement, opts.batch_size, opts.bootstrap, opts.seed,
                             sites_of(Path(opts.data), data.paths), report)

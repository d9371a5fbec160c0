"""``pathotune eval`` as a plain function: a prompt file against labelled tiles, with honest intervals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.options import coerce_paths, kernel_spec


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate, on what, and where to write it."""

    prompts: Path
    data: Path
    out: Path | None = None
    """Output folder; None: ``eval/`` beside the prompt file."""
    batch_size: int = 64
    seed: int = 0
    bootstrap: int = 1000
    precision: str = "auto"
    device: str = "auto"
    weights: Path | None = None
    kernels: str = "auto"
    """``--kernels``: auto (measured), or pinned (``attention=plain,weights=bf16``)."""
    uncalibrated: bool = False
    """Score the raw softmax instead of the calibrated probabilities (the calibration report shows both)."""
    robustness: bool = False
    """Score again under controlled shifts, and per site (``runs.robustness``): ``robustness.png`` and a table."""

    def __post_init__(self) -> None:
        """Counts must be usable."""
        coerce_paths(self)
        kernel_spec(self.kernels)
        if self.batch_size < 1:
            raise BadInput(f"--batch-size {self.batch_size} must be at least 1")
        if self.bootstrap < 0:
            raise BadInput(f"--bootstrap {self.bootstrap} must be 0 (no intervals) or more")

    @property
    def out_folder(self) -> Path:
        """Where the results go."""
        return Path(self.out) if self.out else Path(self.prompts).resolve().parent / "eval"


@dataclass(frozen=True)
class EvalResult:
    """Metrics with intervals, and where they were written."""

    prompts: Path
    data: Path
    task: str
    method: str
    backbone: str
    precision: str
    scores: dict[str, Any]
    """``training.metrics.classification_metrics``: n, metrics, per_class, confusion_matrix, classes, ..."""
    trust: dict[str, Any] = field(default_factory=dict)
    """``runs.eval_trust.trust_report``: calibration (raw and calibrated), conformal coverage, OOD flags."""
    counts: dict[str, int] = field(default_factory=dict)
    out: Path = Path()
    seconds: float = 0.0
    level: str = "tile"
    """``slide``: the counts and metrics are over slides."""
    robustness: dict[str, Any] | None = None
    """``--robustness``: ``runs.robustness.robustness_report``."""
    modality: dict[str, Any] | None = None
    """The tiles' stain distance from the training tiles and whether they are the kind the model knows
    (``engine.stain_stats.check_modality``); None for prompt files without stain statistics."""

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (the scores at the top level, as in ``metrics.json``)."""
        return {
            "prompts": str(self.prompts), "data": str(self.data), "task": self.task, "method": self.method,
            "backbone": self.backbone, "precision": self.precision, **self.scores, **self.trust,
            "counts": self.counts, "out": str(self.out), "seconds": self.seconds, "level": self.level,
            **({"robustness": self.robustness} if self.robustness is not None else {}),
            **({"modality": self.modality} if self.modality is not None else {}),
        }


def eval_run(opts: EvalOptions, report: Reporter = ignore) -> EvalResult:
    """Evaluate ``opts.prompts`` on ``opts.data``; writes metrics JSON, predictions CSV, confusion and reliability PNGs.

    Raises:
        BadInput: a damaged prompt file, another backbone's weights, bad data, or an output folder that cannot
            be made (found before any inference).
    """
    from pathotune_cli.engine import load_prompted_model, random_weights_warning
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.files import Staging, prepare_output_folder, remove_stale_temporaries, write_csv, write_json
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.eval_trust import save_reliability, trust_report
    from pathotune_cli.runs.records import provenance
    from pathotune_cli.runs.trust import load_trust
    from pathotune_cli.training.data import discover
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.metrics import classification_metrics, predictions_table
    from pathotune_cli.training.outputs import model_outputs
    from pathotune_cli.training.plots import save_confusion_matrix

    out = prepare_output_folder(opts.out_folder, "--out")  # before any inference: a bad --out fails at once
    remove_stale_temporaries(out)
    if read_prompt_file(opts.prompts).header.level == "slide":
        from pathotune_cli.runs.evaluate_slides import eval_slides

        return eval_slides(opts, report)
    started = time.time()
    model, file = load_prompted_model(opts.prompts, opts.weights)
    header, task = file.header, file.header.task
    if random_weights_warning(model):
        warn(report, str(random_weights_warning(model)))
    trust = load_trust(file, uncalibrated=opts.uncalibrated)
    if trust.notice:
        warn(report, trust.notice)
    data = discover(opts.data, task, lambda text: warn(report, text))
    overlap = training_overlap(file.path, data.paths)
    if overlap:
        warn(report, overlap)
    placement = place(opts.device, opts.precision)
    model.place(placement, "inference", kernel_spec(opts.kernels))
    note(report, f"evaluating {len(data)} tiles with {header.method} on {task.name}: {trust.describe()}")
    outputs = model_outputs(model, ImageStore(data.paths, model.backbone.input_size), opts.batch_size, placement,
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
        counts=data.counts(), out=out, seconds=round(time.time() - started, 2), robustness=robust,
        modality=modality,
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
            from pathotune_cli.runs.robustness import save_robustness_plot

            save_robustness_plot(robust, staged.temp(out / "robustness.png"), title=f"{task.name}: {len(data)} tiles")
        staged.commit()
    return result


def _modality(header: Any, data: Any, size: int, report: Reporter) -> dict[str, Any] | None:
    """A sample of the tiles against the training tiles' stain statistics; a warning line when they differ."""
    from pathotune_cli.engine.stain_stats import check_modality, modality_warning, sample_index
    from pathotune_cli.training.images import ImageStore

    if header.stain_stats is None or not len(data):
        return None
    index = sample_index(len(data))
    tiles = ImageStore([data.paths[i] for i in index], size).batch(list(range(len(index))))
    check = check_modality(header.stain_stats, tiles.permute(0, 2, 3, 1).numpy())
    line = modality_warning(f"tile set {data.source}", check, strict_hint=False)
    if line:
        warn(report, line)
    return check._asdict()


def _robustness(opts: EvalOptions, model: Any, data: Any, probs: Any, scores: dict[str, Any], trust: Any,
                placement: Any, report: Reporter) -> dict[str, Any]:
    """``--robustness``: the metrics under controlled shifts, and per site (``runs.robustness``)."""
    from pathotune_cli.runs.robustness import robustness_report, sites_of
    from pathotune_cli.training.images import ImageStore

    store = ImageStore(data.paths, model.backbone.input_size)
    return robustness_report(model, store, data.labels, data.class_names, trust.probabilities, scores,
                             probs, placement, opts.batch_size, opts.bootstrap, opts.seed,
                             sites_of(Path(opts.data), data.paths), report)


def training_overlap(prompts: Path, paths: list[Path]) -> str | None:
    """A warning when evaluation tiles are also in the prompt file's training or validation data.

    ``tune`` writes every file it read, with its sha256, to ``data_manifest.csv`` beside the prompt file; tiles
    are compared by content, so a copy under another name counts. None when there is no manifest or no overlap.
    """
    import csv

    from pathotune_cli.files import sha256_file

    manifest = Path(prompts).resolve().parent / "data_manifest.csv"
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            seen = {row.get("sha256"): row.get("split") or "train" for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    splits = [seen[digest] for digest in (sha256_file(p) for p in paths) if digest in seen]
    if not splits:
        return None
    counts = {s: splits.count(s) for s in ("train", "val") if splits.count(s)}
    which = " and ".join(f"{n} in its {'training' if s == 'train' else 'validation'} data" for s, n in counts.items())
    return (f"{len(splits)} of {len(paths)} evaluation tiles are also in the data this prompt file was tuned on "
            f"({which}, by sha256 in {manifest}): these metrics overstate how it does on new tiles")

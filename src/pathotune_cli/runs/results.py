"""Typed results of the commands whose two levels (tile, slide) both build them: ``tune`` and ``eval``.

Apart from the commands so that each level's strategy (``runs.slide_level``) builds the same type the command
returns, without importing the command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.config import RunConfig
from pathotune_cli.errors import BadInput
from pathotune_cli.runs.options import coerce_paths, kernel_spec

UNITS = {"tile": "images", "slide": "slides"}
"""What a tuning run's counts count, by level."""


@dataclass(frozen=True)
class Metric:
    """One measured value with its bootstrap 95% interval (None where undefined or not bootstrapped)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def of(cls, summary: Mapping[str, object]) -> Metric:
        """From the ``{"value", "ci_low", "ci_high"}`` of ``metrics.json``."""
        return cls(*(_number(summary.get(key)) for key in ("value", "ci_low", "ci_high")))


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MetricRow:
    """A named metric (accuracy, macro_auroc, ...)."""

    name: str
    metric: Metric


@dataclass(frozen=True)
class ClassRow:
    """One class's support and its precision, recall and F1 with intervals."""

    name: str
    support: int
    precision: Metric
    recall: Metric
    f1: Metric


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run made, for the summary table and ``--json``."""

    run: Path
    prompts: Path
    prompts_bytes: int
    task: str
    backbone: str
    method: str
    trainable_parameters: int
    backbone_parameters: int
    precision: str
    device: str
    train_images: int
    val_images: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    early_stopping_on: str
    random_weights: bool
    resumed_from: int | None
    seconds: float
    instance_images_encoded: int
    validation: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    kernels: dict[str, str] = field(default_factory=dict)
    """The kernels each frozen part ran with in training (measured on this machine, or pinned)."""
    level: str = "tile"
    """``slide``: the image counts are slides, and the file holds an aggregator."""
    folds: list[dict[str, Any]] | None = None
    """With ``--folds``: each fold's prompt file and validation metrics."""
    world_size: int = 1
    """Processes that trained together (``torchrun``); the global batch was split over them."""
    rank: int = 0
    """This process's rank: only rank 0 writes the run folder, so another rank's result has no prompt file size
    and no validation."""

    @property
    def unit(self) -> str:
        """What the image counts count: ``images`` (tiles) or ``slides``."""
        return UNITS[self.level]

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a share of the backbone's."""
        return self.trainable_parameters / max(1, self.backbone_parameters)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        data = asdict(self)
        data.update(run=str(self.run), prompts=str(self.prompts), trainable_share=self.trainable_share)
        return data


def config_digest(config: RunConfig) -> str:
    """What must not change between a run and its ``--resume``: everything but where outputs go and the device."""
    data = config.model_dump(mode="json")
    for key in ("out", "device", "runtime"):
        data.pop(key, None)
    if data["mil"].get("slides_per_step") == 1:  # the default, as before the key existed: old checkpoints resume
        data["mil"].pop("slides_per_step")
    from pathotune_cli.config.run import KNNSettings, LoRASettings

    for key, default in (("lora", LoRASettings()), ("knn", KNNSettings())):  # likewise for runs before these keys
        if data["prompt"].get(key) == default.model_dump(mode="json"):
            data["prompt"].pop(key)
    if data.get("default_mpp") is None:  # likewise for runs before --default-mpp reached tune
        data.pop("default_mpp", None)
    from pathotune_cli.config.run import ADDED_DEFAULTS

    for key, default in ADDED_DEFAULTS.items():  # the same for keys added since (stain, augmentation)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if leaf in node and node[leaf] == default:
            node.pop(leaf)
    if data["train"].get("stain") == {}:
        data["train"].pop("stain")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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
    """``runs.trust.report.trust_report``: calibration (raw and calibrated), conformal coverage, OOD flags."""
    counts: dict[str, int] = field(default_factory=dict)
    out: Path = Path()
    seconds: float = 0.0
    level: str = "tile"
    """``slide``: the counts and metrics are over slides."""
    robustness: dict[str, Any] | None = None
    """``--robustness``: ``runs.tile_level.robustness.robustness_report``."""
    modality: dict[str, Any] | None = None
    """The tiles' stain distance from the training tiles and whether they are the kind the model knows
    (``engine.stain_stats.check_modality``); None for prompt files without stain statistics."""
    tuning_overlap: dict[str, int] | None = None
    """How many evaluation items the prompt file was tuned on (``train``, ``val``, of ``items``), by content;
    None where the run left no data manifest to compare with."""

    @property
    def unit(self) -> str:
        """What the metrics are over: ``tiles`` or ``slides``."""
        return {"tile": "tiles", "slide": "slides"}[self.level]

    @property
    def n(self) -> int:
        """How many items (tiles or slides) were scored."""
        return int(self.scores["n"])

    def metric_rows(self) -> list[MetricRow]:
        """Each metric with its interval, in the order of ``metrics.json``."""
        return [MetricRow(name, Metric.of(v)) for name, v in self.scores["metrics"].items()]

    def metric_values(self) -> dict[str, float | None]:
        """Each metric's value by name."""
        return {row.name: row.metric.value for row in self.metric_rows()}

    def class_rows(self) -> list[ClassRow]:
        """Per class: support, precision, recall and F1 with intervals."""
        return [ClassRow(name, int(v["support"]), Metric.of(v["precision"]), Metric.of(v["recall"]),
                         Metric.of(v["f1"])) for name, v in self.scores["per_class"].items()]

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (the scores at the top level, as in ``metrics.json``)."""
        return {
            "prompts": str(self.prompts), "data": str(self.data), "task": self.task, "method": self.method,
            "backbone": self.backbone, "precision": self.precision, **self.scores, **self.trust,
            "counts": self.counts, "out": str(self.out), "seconds": self.seconds, "level": self.level,
            "tuning_overlap": self.tuning_overlap,
            **({"robustness": self.robustness} if self.robustness is not None else {}),
            **({"modality": self.modality} if self.modality is not None else {}),
        }


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
    default_mpp: float | None = None
    """Slide level: mpp for slides whose metadata and CSV row give none (as in ``tile`` and ``predict``)."""
    force: bool = False
    """Replace an evaluation of another prompt file or other data in the output folder."""
    report: bool = True
    """Write ``report.html`` (``runs.report``) beside the metrics: one offline page, about a second."""
    robustness: bool = False
    """Score again under controlled shifts, and per site (``runs.tile_level.robustness``): ``robustness.png``, a
    table."""

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

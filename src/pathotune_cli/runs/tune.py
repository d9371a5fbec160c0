"""``pathotune tune`` as a plain function: resolve the config, build the model, fit, write the run folder."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.config import RunConfig, TaskPreset, apply_overrides, load_backbone_preset, load_task_preset
from pathotune_cli.config.lab import lab_config_path, output_folder, read_lab_defaults
from pathotune_cli.config.loader import read_yaml, validate
from pathotune_cli.errors import BadInput, MissingWeights

PROMPTS_NAME = "prompts.safetensors"


@dataclass
class TuneOptions:
    """What the command line (or a Python caller) asks for; None means "from the preset or config file"."""

    preset: str | None = None
    data: str | None = None
    backbone: str | None = None
    method: str | None = None
    out: str | None = None
    config: str | None = None
    sets: list[str] = field(default_factory=list)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    shots: int | None = None
    seed: int | None = None
    precision: str | None = None
    device: str | None = None
    weights: str | None = None
    val_data: str | None = None
    download: bool = False
    """Allow downloading missing weights (never without it)."""


def choose_backbone(opts: TuneOptions, task: TaskPreset) -> tuple[str, str | None]:
    """The backbone a run uses and, where the user did not name it, why: the lab default, else the task's
    recommended backbone. Random weights therefore run only when named (``--backbone tiny-random``)."""
    if opts.backbone:
        return opts.backbone, None
    lab = read_lab_defaults().backbone
    if lab:
        return lab, f"the lab default in {lab_config_path()}"
    return task.recommended_backbone, f"the {task.name} task's recommended backbone"


def resolve_config(opts: TuneOptions) -> RunConfig:
    """One resolved ``RunConfig``: a config file or presets, then explicit options, then ``--set``.

    Raises:
        BadInput: a bad preset, option or ``--set``; or (``MissingWeights``) the weights of a backbone the user
            did not name are not here, with why it was chosen and how to choose another.
    """
    chosen_because = None
    if opts.config:
        base = read_yaml(Path(opts.config))
        source = opts.config
    else:
        if not opts.preset:
            raise BadInput(
                "no task given",
                "pass --preset NAME (see `pathotune presets list`) or --config RUN/config.yaml",
            )
        task = load_task_preset(opts.preset)
        name, chosen_because = choose_backbone(opts, task)
        backbone = load_backbone_preset(name)
        base = {"task": task.model_dump(mode="json"), "backbone": backbone.model_dump(mode="json")}
        source = "settings (--preset, --backbone, options, --set)"
    if opts.config and opts.preset:
        base["task"] = load_task_preset(opts.preset).model_dump(mode="json")
    if opts.config and opts.backbone:
        base["backbone"] = load_backbone_preset(opts.backbone).model_dump(mode="json")
    explicit = {
        "data": opts.data, "out": opts.out, "seed": opts.seed, "precision": opts.precision,
        "device": opts.device, "weights": opts.weights, "val_data": opts.val_data,
    }
    for key, value in explicit.items():
        if value is not None:
            base[key] = str(value) if isinstance(value, Path) else value
    for key in ("data", "val_data", "weights"):  # absolute, so RUN/config.yaml reruns from any folder
        if base.get(key):
            base[key] = str(Path(str(base[key])).expanduser().resolve())
    for key, value in {
        "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "shots": opts.shots
    }.items():
        if value is not None:
            base.setdefault("train", {})[key] = value
    if opts.method is not None:
        base.setdefault("prompt", {})["method"] = opts.method
    if not base.get("data"):
        raise BadInput("no training data given", "pass --data DIR|CSV")
    base.setdefault("out", str(output_folder("tune", None)))
    base = apply_overrides(base, opts.sets)
    config = validate(RunConfig, base, source=source)
    if chosen_because is not None:
        _require_chosen_weights(config, chosen_because, opts.download)
    return config


def _require_chosen_weights(config: RunConfig, because: str, allow_download: bool) -> None:
    """A backbone the user did not name must say why it was chosen when its weights are missing."""
    from pathotune_cli.backbones import resolve_weights

    name = config.backbone.name
    try:
        resolve_weights(config.backbone, config.weights, allow_download)
    except MissingWeights as exc:
        raise MissingWeights(
            f"{exc.problem}; '{name}' is {because}, used because no --backbone was given",
            f"{exc.fix}, or choose another with --backbone NAME (`pathotune weights list` shows what is here)",
        ) from None


def config_digest(config: RunConfig) -> str:
    """What must not change between a run and its ``--resume``: everything but where outputs go and the device."""
    data = config.model_dump(mode="json")
    for key in ("out", "device"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def tune_run(config: RunConfig, resume: bool = False, report=None, allow_download: bool = False) -> dict[str, Any]:  # noqa: ANN001
    """Tune prompts for ``config``; returns the summary that the CLI renders (and ``--json`` prints)."""
    from pathotune_cli.backbones import resolve_weights

    resolve_weights(config.backbone, config.weights, allow_download)  # a missing backbone fails before any work
    import torch

    from pathotune_cli.engine import build_prompted_model, prompt_file_meta, random_weights_warning, save_prompt_file
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.records import provenance, write_json, write_yaml
    from pathotune_cli.runs.tune_outputs import data_manifest, write_history, write_validation_report
    from pathotune_cli.training.data import discover, require_classes, sample_shots, split_train_val
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.loop import Split, fit

    report = report or (lambda kind, info: None)
    started = time.time()
    out = Path(config.out)
    if out.exists() and (out / PROMPTS_NAME).exists() and not resume:
        raise BadInput(f"{out} already holds a finished run", "choose another --out, or pass --resume to continue it")
    warn = lambda message: report("warning", {"message": message})  # noqa: E731
    task, train_cfg = config.task, config.train
    data = discover(config.data, task, warn)
    require_classes(data)
    val_given = discover(config.val_data, task, warn) if config.val_data else None
    train_set, val_set = split_train_val(data, train_cfg.val_fraction, config.seed, val_given)
    train_set = sample_shots(train_set, train_cfg.shots, config.seed)
    require_classes(train_set)
    placement = place(config.device, config.precision if config.precision != "auto" else config.backbone.precision)

    size = config.backbone.input_size
    train_split = Split(ImageStore(train_set.paths, size), train_set.labels)
    val_split = Split(ImageStore(val_set.paths, size), val_set.labels) if val_set is not None else None

    torch.manual_seed(config.seed)
    built = build_prompted_model(task, config.backbone, config.prompt, config.weights, allow_download)
    model = built.model
    share = model.trainable_parameters() / max(1, model.backbone_parameters())
    report("info", {"message": (
        f"{config.prompt.method} on {config.backbone.name}: {model.trainable_parameters():,} trainable parameters "
        f"({share:.2%} of the backbone's {model.backbone_parameters():,}); {placement.precision} on {placement.device}"
    )})
    random_note = random_weights_warning(model)
    if random_note:
        warn(random_note)
    monitor = f"validation {train_cfg.monitor}" if val_set is not None else "training loss"
    if val_set is None:
        warn("no validation split (train.val_fraction 0 and no --val-data or split column): "
             "early stopping and the best epoch follow the training loss")

    out.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    write_yaml(out / "config.yaml", resolved)
    write_json(out / "run.json", provenance({
        "seed": config.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "backbone_fingerprint": built.backbone_fingerprint,
        "weight_source": model.backbone.weight_source.describe(),
        "placement": {"device": placement.device, "precision": placement.precision, "reason": placement.reason,
                      "threads": torch.get_num_threads()},
        "config_digest": config_digest(config),
        "early_stopping_on": monitor,
        "random_weights": bool(random_note),
    }))
    data_manifest(out / "data_manifest.csv", train_set, val_set)

    result = fit(
        model, train_split, val_split, train_cfg, placement, config.seed,
        checkpoint=out / "checkpoint.safetensors", resume=resume, config_digest=config_digest(config), report=report,
    )
    write_history(out / "history.csv", result.history)
    metrics = write_validation_report(
        out, model, val_split, val_set, task, train_cfg.batch_size, placement, config.seed, result
    )
    counts = {"train": train_set.counts(), "val": val_set.counts() if val_set is not None else {}}
    meta = prompt_file_meta(
        built, task, config.backbone,
        metrics={"split": "validation", **(metrics.get("summary") or {})},
        training={"seed": config.seed, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                  "class_counts": counts, "data": config.data, "config_digest": config_digest(config)},
    )
    prompts = save_prompt_file(out / PROMPTS_NAME, model.trained_state(), meta)
    return {
        "run": str(out),
        "prompts": str(prompts),
        "prompts_bytes": prompts.stat().st_size,
        "task": task.name,
        "backbone": config.backbone.name,
        "method": config.prompt.method,
        "trainable_parameters": model.trainable_parameters(),
        "backbone_parameters": model.backbone_parameters(),
        "trainable_share": share,
        "precision": placement.precision,
        "device": placement.device,
        "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "early_stopping_on": monitor,
        "random_weights": bool(random_note),
        "resumed_from": result.resumed_from,
        "seconds": round(time.time() - started, 2),
        "instance_images_encoded": model.instance_images_encoded,
        "validation": metrics.get("summary"),
        "history": result.history,
    }

"""``pathotune tune`` as plain functions: resolve the config, load the data, build the model, fit, write the run.

The stages, each a named step below: ``resolve_config`` (options, presets, ``--set``, the backbone's weights),
``_load_splits`` (labelled tiles to train and validation sets), ``_build`` (frozen backbone plus fresh prompts),
``_start_run_folder`` (config, run record, data manifest), ``training.loop.fit``, and ``_finish`` (history,
validation report, the prompt file).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.cluster import World
from pathotune_cli.config import RunConfig, TaskPreset, apply_overrides, load_backbone_preset, load_task_preset
from pathotune_cli.config.lab import lab_config_path, output_folder, read_lab_defaults
from pathotune_cli.config.loader import read_yaml, validate
from pathotune_cli.config.run import ADDED_DEFAULTS
from pathotune_cli.errors import BadInput, MissingWeights
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.options import coerce_paths
from pathotune_cli.runs.records import add_to_run_record
from pathotune_cli.runs.results import TuneResult, config_digest
from pathotune_cli.runs.run_folder import PROMPTS_NAME

if TYPE_CHECKING:
    from pathotune_cli.engine.build import BuiltModel
    from pathotune_cli.engine.model import PromptedModel
    from pathotune_cli.hardware import Placement
    from pathotune_cli.training.data import LabelledSet
    from pathotune_cli.training.distributed import Dist
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.loop import FitResult, Split


@dataclass(frozen=True)
class TuneOptions:
    """What the command line (or a Python caller) asks for; None means "from the preset or config file"."""

    preset: str | None = None
    data: Path | None = None
    backbone: str | None = None
    method: str | None = None
    out: Path | None = None
    config: Path | None = None
    sets: tuple[str, ...] = ()
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    shots: int | None = None
    stain: str | None = None
    """``macenko``, ``reinhard`` or ``none`` (``train.stain.method``)."""
    stain_reference: Path | None = None
    """An image or folder to fit the stain normalisation to (``train.stain.reference``)."""
    seed: int | None = None
    precision: str | None = None
    device: str | None = None
    weights: Path | None = None
    val_data: Path | None = None
    tile_prompts: Path | None = None
    """Slide-level tasks, two-stage: a tile-level prompt file whose features feed the aggregator (its backbone
    is the run's)."""
    features: Path | None = None
    """Slide-level tasks: a folder of per-slide feature files to reuse."""
    folds: int | None = None
    skip_bad_slides: bool = False
    default_mpp: float | None = None
    """Slide-level tasks: mpp for slides whose metadata and CSV row give none."""
    download: bool = False
    """Allow downloading missing weights (never without it)."""

    def __post_init__(self) -> None:
        """A task and data must come from somewhere: the options or a config file."""
        coerce_paths(self)
        if not self.config and not self.preset:
            raise BadInput(
                "no task given", "pass --preset NAME (see `pathotune presets list`) or --config RUN/config.yaml"
            )
        if not self.config and self.data is None and self.method != "zeroshot":
            raise BadInput("no training data given", "pass --data DIR|CSV (only --method zeroshot runs without it)")
        if self.stain_reference is not None and not Path(self.stain_reference).exists():
            from pathotune_cli.engine.stain_fit import REFERENCE_FIX

            raise BadInput(f"stain reference {self.stain_reference} does not exist", REFERENCE_FIX)


def choose_backbone(opts: TuneOptions, task: TaskPreset) -> tuple[str, str | None]:
    """The backbone a run uses and, where the user did not name it, why.

    Without ``--backbone``: the lab default, else the task's recommended backbone. Random weights therefore run
    only when named (``--backbone tiny-random``).
    """
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
    base, source, chosen_because = _base_config(opts)
    explicit = {"data": opts.data, "out": opts.out, "seed": opts.seed, "precision": opts.precision,
                "device": opts.device, "weights": opts.weights, "val_data": opts.val_data,
                "tile_prompts": opts.tile_prompts, "features": opts.features, "folds": opts.folds,
                "skip_bad_slides": opts.skip_bad_slides or None, "default_mpp": opts.default_mpp}
    base.update({k: str(v) if isinstance(v, Path) else v for k, v in explicit.items() if v is not None})
    for key in ("data", "val_data", "weights", "tile_prompts", "features"):  # absolute: reruns from any folder
        if base.get(key):
            base[key] = str(Path(str(base[key])).expanduser().resolve())
    train = {"epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "shots": opts.shots}
    base.setdefault("train", {}).update({k: v for k, v in train.items() if v is not None})
    stain = {k: v for k, v in {"method": opts.stain, "reference": str(Path(opts.stain_reference).expanduser().resolve())
             if opts.stain_reference else None}.items() if v is not None}
    if stain:
        base["train"].setdefault("stain", {}).update(stain)
    if opts.method is not None:
        base.setdefault("prompt", {})["method"] = opts.method
    if not base.get("data") and base.get("prompt", {}).get("method") != "zeroshot":
        raise BadInput("no training data given", "pass --data DIR|CSV (only --method zeroshot runs without it)")
    base.setdefault("out", str(output_folder("tune", None)))
    config = validate(RunConfig, apply_overrides(base, [_short_key(s) for s in opts.sets]), source=source)
    if chosen_because is not None:
        _require_chosen_weights(config, chosen_because, opts.download)
    return config


def _short_key(assignment: str) -> str:
    """``lora.*`` and ``knn.*`` are short for ``prompt.lora.*`` and ``prompt.knn.*`` in ``--set``."""
    return f"prompt.{assignment}" if assignment.startswith(("lora.", "knn.")) else assignment


def tune_run(
    config: RunConfig, *, resume: bool = False, force: bool = False, allow_download: bool = False,
    report: Reporter = ignore, world: World | None = None,
) -> TuneResult:
    """Tune prompts for ``config`` and write the run folder.

    ``run.json`` says ``running`` while it works, then ``finished`` or ``failed`` (with the error); the prompt
    file and the reports beside it are renamed into place together at the end, so a folder holds them only
    when the run finished.

    Args:
        config: The resolved run.
        resume: Continue from the run folder's checkpoint.
        force: Start again in a folder that holds another run (its run files are removed first).
        allow_download: Fetch missing weights.
        report: Receives progress events (on rank 0 only).
        world: This process's rank under ``torchrun``/``srun`` (``cluster.world_from_env``; None: one process).
            Every rank trains its slice of each global batch; rank 0 alone writes and reports. Every rank checks
            the folder before any writes (rank 0 writes only after the ranks first meet); a rank whose checks
            fail still meets the others, and then every rank stops with its error (rank 0 prints it). When another
            rank's failure stops the run, rank 0 marks ``run.json`` ``failed`` with that rank's error first.

    Raises:
        BadInput: missing weights, bad data, an output folder that cannot be written, a run in the way
            (finished, unfinished without ``resume``/``force``, or still going), a checkpoint of other settings.
    """
    from pathotune_cli.runs import run_folder

    world = world or World()
    report = report if world.main else ignore
    started = time.time()
    out = Path(config.out)
    existed = out.exists()
    refused = _checked(lambda: _check_before_start(config, out, resume, force, allow_download, world), world)

    def stopped(line: str) -> None:  # the ranks stop at once: run.json says why, and an empty folder goes
        run_folder.mark_failed(out, line)
        _remove_if_empty(out, existed)

    try:
        with run_folder.failure_recorded(out):  # both levels: run.json says running, then finished or failed
            result = _levels()[config.task.level](out, config, resume, allow_download, report, started, world,
                                                  refused, stopped)
    except BaseException:
        _remove_if_empty(out, existed)  # refused before it wrote anything: no empty folder
        raise
    if world.main:
        run_folder.mark_finished(out, result.seconds)
    return result


def _levels() -> dict[str, Callable[..., TuneResult]]:
    """How each level tunes, by the task's ``level``."""
    return {"tile": _tune_in, "slide": _tune_slide_level}


def _tune_slide_level(out: Path, config: RunConfig, resume: bool, allow_download: bool, report: Reporter,
                      started: float, world: World, refused: Exception | None,
                      stopped: Callable[[str], None]) -> TuneResult:
    """A slide-level task: tile features into a MIL aggregator (``runs.slide_level.tune``)."""
    from pathotune_cli.runs.slide_level.tune import tune_slides

    return tune_slides(config, resume=resume, allow_download=allow_download, report=report, world=world,
                       refused=refused, on_failure=stopped)


def _check_before_start(config: RunConfig, out: Path, resume: bool, force: bool, allow_download: bool,
                        world: World) -> None:
    """What every rank checks before any work: weights, kernel pin, the folder's run, ``--out`` writable."""
    from pathotune_cli.backbones import resolve_weights
    from pathotune_cli.files import prepare_output_folder, remove_stale_temporaries
    from pathotune_cli.runs import run_folder

    resolve_weights(config.backbone, config.weights, allow_download)  # a missing backbone fails before any work
    _check_kernel_pin(config)
    run_folder.claim(out, resume=resume, force=force)
    if resume:
        _require_same_settings(out, config)
    prepare_output_folder(out, "--out")
    if world.main:
        remove_stale_temporaries(out)
        if force:
            run_folder.clear(out)


def _checked(check: Callable[[], None], world: World) -> Exception | None:
    """Run ``check``; under several ranks, return its error instead of raising it.

    The ranks then meet and all stop, rank 0 naming the error: a rank that ended alone would leave the others
    waiting for it (srun) or be reported by torchrun without its line.
    """
    try:
        check()
    except Exception as exc:
        if not world.distributed:
            raise
        return exc
    return None


def _remove_if_empty(out: Path, existed: bool) -> None:
    """Remove the run folder this run made when nothing was written into it (another rank may have already)."""
    if not existed and out.is_dir() and not any(out.iterdir()):
        with contextlib.suppress(OSError):
            out.rmdir()


def _check_kernel_pin(config: RunConfig) -> None:
    """Stored weights pinned under a precision ``auto`` resolves to another dtype: refused before the folder."""
    if config.runtime.kernels.weights in ("bf16", "fp16"):
        from pathotune_cli.backbones.kernels import check_pinned_weights
        from pathotune_cli.runs.per_slide.devices import rank_placement

        placement = rank_placement(config.device, config.precision, config.backbone.precision, World())
        check_pinned_weights(config.runtime.kernels, placement.precision)


def _tune_in(out: Path, config: RunConfig, resume: bool, allow_download: bool, report: Reporter,
             started: float, world: World, refused: Exception | None, stopped: Callable[[str], None]) -> TuneResult:
    """Join the other ranks (if any), then load, build, fit (every rank) and finish (rank 0) in a claimed folder.

    ``refused``: this rank's error from the checks (every rank stops once the ranks meet); ``stopped``: what rank 0
    does with the error line before another rank's failure ends it.
    """
    from pathotune_cli.runs.per_slide.devices import rank_placement
    from pathotune_cli.training.distributed import session

    placement = rank_placement(config.device, config.precision, config.backbone.precision, world)
    with session(world, placement.device, refused=refused, on_failure=stopped) as dist:
        return _tune_tiles(config, out, placement, resume, allow_download, report, dist, started)


def _tune_tiles(config: RunConfig, out: Path, placement: Placement, resume: bool, allow_download: bool,
                report: Reporter, dist: Dist, started: float) -> TuneResult:
    """Load, build, fit (every rank), then the run folder's outputs (rank 0)."""
    from pathotune_cli.training.fit_free import fit_without_gradients
    from pathotune_cli.training.loop import fit

    train_set, val_set, splits = _load_splits(config, report)
    built = _build(config, placement, allow_download, report)
    built.stain = _fit_stain(config, built.model, splits[0].store, report) if splits[0] is not None else {}
    dist.agree("backbone (weights fingerprint)", built.backbone_fingerprint,
               "give every rank the same backbone weights (--weights on a file system all nodes see)")
    monitor = f"validation {config.train.monitor}" if val_set is not None else "training loss"
    if dist.main:
        _start_run_folder(out, config, built, placement, train_set, val_set, monitor, started, dist)
    if config.prompt.training_free:  # prototypes, knn, zeroshot: one pass, no optimiser
        fitted = fit_without_gradients(built.model, splits[0], splits[1], config.train, placement,
                                       config.runtime.kernels, report, dist)
    else:
        fitted = fit(
            built.model, splits[0], splits[1], config.train, placement, config.seed,
            checkpoint=out / "checkpoint.safetensors", resume=resume, config_digest=config_digest(config),
            report=report, kernels=config.runtime.kernels, dist=dist,
        )
    prompts, validation = out / PROMPTS_NAME, None
    if dist.main:
        add_to_run_record(out / "run.json", kernels=fitted.kernels)
        prompts, validation = _finish(out, config, built, placement, train_set, val_set, splits, fitted, report)
    model = built.model
    return TuneResult(
        run=out, prompts=prompts, prompts_bytes=prompts.stat().st_size if dist.main else 0, task=config.task.name,
        backbone=config.backbone.name, method=config.prompt.method,
        trainable_parameters=model.trainable_parameters(), backbone_parameters=model.backbone_parameters(),
        precision=placement.precision, device=placement.device, train_images=len(train_set) if train_set else 0,
        val_images=len(val_set) if val_set is not None else 0, epochs_run=len(fitted.history),
        best_epoch=fitted.best_epoch, stopped_early=fitted.stopped_early, early_stopping_on=monitor,
        random_weights=model.backbone.weight_source.kind == "random", resumed_from=fitted.resumed_from,
        seconds=round(time.time() - started, 2), instance_images_encoded=model.instance_images_encoded,
        validation=validation, history=fitted.history, kernels=fitted.kernels, world_size=dist.size,
        rank=dist.rank,
    )


def _require_same_settings(out: Path, config: RunConfig) -> None:
    """``--resume`` of a run started with other settings names what changed (from its ``config.yaml``)."""
    from pathotune_cli.runs.run_folder import CHECKPOINT_NAME

    if not (out / CHECKPOINT_NAME).is_file() or not (out / "config.yaml").is_file():
        return
    try:
        before = _flat(read_yaml(out / "config.yaml"))
    except BadInput:
        return  # the checkpoint's own digest still guards the resume
    now = _flat(config.model_dump(mode="json"))
    changed = sorted(k for k in {*before, *now} if before.get(k, ADDED_DEFAULTS.get(k)) != now.get(k)
                     and k.split(".")[0] not in ("out", "device", "runtime"))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise BadInput(f"{out} was started with other settings (changed: {shown})",
                       "resume with the same options, or pass --force to start again in it")


def _flat(data: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def _base_config(opts: TuneOptions) -> tuple[dict[str, Any], str, str | None]:
    """The config before explicit options: a config file (its task and backbone replaceable), or presets."""
    if opts.config:
        base = read_yaml(Path(opts.config))
        if opts.preset:
            base["task"] = load_task_preset(opts.preset).model_dump(mode="json")
        if opts.backbone:
            base["backbone"] = load_backbone_preset(opts.backbone).model_dump(mode="json")
        return base, str(opts.config), None
    task = load_task_preset(str(opts.preset))
    if opts.tile_prompts is not None and not opts.backbone:  # two-stage: the prompt file's backbone
        from pathotune_cli.engine.promptfile import read_prompt_file

        backbone = read_prompt_file(opts.tile_prompts).header.backbone.preset
        base = {"task": task.model_dump(mode="json"), "backbone": backbone.model_dump(mode="json")}
        return base, "settings (--preset, --prompts, options, --set)", None
    name, because = choose_backbone(opts, task)
    backbone = load_backbone_preset(name)
    base = {"task": task.model_dump(mode="json"), "backbone": backbone.model_dump(mode="json")}
    return base, "settings (--preset, --backbone, options, --set)", because


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


def _load_splits(config: RunConfig, report: Reporter) -> tuple[LabelledSet | None, LabelledSet | None,
                                                                tuple[Split | None, Split | None]]:
    """Labelled tiles -> (train set, validation set or None, (train Split, validation Split or None))."""
    from pathotune_cli.runs.tile_level.labels import discover_data, one_group_warning, store_for
    from pathotune_cli.training.data import require_classes, sample_shots, split_train_val
    from pathotune_cli.training.loop import Split

    def warning(text: str) -> None:
        warn(report, text)

    if config.data is None:  # zeroshot without data: the classifier is the class descriptions' text
        warning("no --data: zero-shot from the class descriptions alone, with no validation metrics or calibration")
        return None, None, (None, None)
    data = discover_data(config.data, config.task, warning)  # tiles on disk, or in slides (labels.csv)
    require_classes(data)
    val_given = discover_data(config.val_data, config.task, warning, "--val-data") if config.val_data else None
    train_set, val_set = split_train_val(data, config.train.val_fraction, config.seed, val_given)
    train_set = sample_shots(train_set, config.train.shots, config.seed, warning)
    require_classes(train_set)
    one_slide = one_group_warning(data, config.train.val_fraction) if val_set is None else None
    if one_slide:
        warning(one_slide)
    elif val_set is None:
        warning("no validation split (train.val_fraction 0 and no --val-data or split column): "
                "early stopping and the best epoch follow the training loss")
    size = config.backbone.input_size
    train = Split(store_for(train_set, size), train_set.labels)
    val = Split(store_for(val_set, size), val_set.labels) if val_set is not None else None
    return train_set, val_set, (train, val)


def _build(config: RunConfig, placement: Placement, allow_download: bool, report: Reporter) -> BuiltModel:
    """The frozen backbone with fresh prompts and head (seeded), and what the prompt file records of it."""
    import torch

    from pathotune_cli.engine import build_prompted_model, random_weights_warning

    torch.manual_seed(config.seed)
    built = build_prompted_model(config.task, config.backbone, config.prompt, config.weights, allow_download)
    model = built.model
    share = model.trainable_parameters() / max(1, model.backbone_parameters())
    note(report, (
        f"{config.prompt.method} on {config.backbone.name}: {model.trainable_parameters():,} trainable parameters "
        f"({share:.2%} of the backbone's {model.backbone_parameters():,}); {placement.precision} on {placement.device}"
    ))
    random_note = random_weights_warning(model)
    if random_note:
        warn(report, random_note)
    return built


def _fit_stain(config: RunConfig, model: PromptedModel, store: ImageStore, report: Reporter) -> dict[str, Any]:
    """``--stain``: the normalisation fitted and set inside the model; always: the training tiles' stain statistics."""
    from pathotune_cli.engine.stain_fit import prepare_stain

    header = prepare_stain(model, config.train.stain, store, config.seed)
    if "stain" in header:
        note(report, f"stain normalisation {header['stain'].method} fitted to {header['stain'].reference}: "
                     "applied inside the model by every command and export")
    return header


def _start_run_folder(out: Path, config: RunConfig, built: BuiltModel, placement: Placement,
                      train_set: LabelledSet | None, val_set: LabelledSet | None,
                      monitor: str, started: float, dist: Dist) -> None:
    """The resolved config, the run record and the data manifest, before training starts."""
    import torch

    from pathotune_cli.files import write_json, write_yaml
    from pathotune_cli.runs.records import provenance
    from pathotune_cli.runs.run_folder import started_record
    from pathotune_cli.runs.tune_outputs import data_manifest

    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", config.model_dump(mode="json"))
    write_json(out / "run.json", provenance(started_record({
        "seed": config.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "backbone_fingerprint": built.backbone_fingerprint,
        "weight_source": built.model.backbone.weight_source.describe(),
        "placement": {"device": placement.device, "precision": placement.precision, "reason": placement.reason,
                      "threads": torch.get_num_threads()},
        "config_digest": config_digest(config),
        "early_stopping_on": monitor,
        "random_weights": built.model.backbone.weight_source.kind == "random",
        **dist.describe(config.train.batch_size),
    })))
    data_manifest(out / "data_manifest.csv", train_set, val_set)


def _finish(out: Path, config: RunConfig, built: BuiltModel, placement: Placement, train_set: LabelledSet | None,
            val_set: LabelledSet | None, splits: tuple[Split | None, Split | None], fitted: FitResult,
            report: Reporter) -> tuple[Path, dict[str, Any] | None]:
    """History, validation report, trust section and prompt file, renamed into place together, prompts last.

    Each is written under a temporary name first, so a folder holds them only when the run finished.
    """
    from pathotune_cli.engine import prompt_header, save_prompt_file
    from pathotune_cli.files import Staging
    from pathotune_cli.runs.tune_outputs import validation_trust, write_history, write_validation_report

    task = config.task
    batch = config.train.batch_size
    probs, trust = validation_trust(built.model, splits, batch, placement, config.seed, fitted, task.class_names,
                                    report)
    if trust is None:
        warn(report, "no validation split: no temperature, prediction sets or OOD flags in the prompt file")
    with Staging() as staged:
        write_history(staged.temp(out / "history.csv"), fitted.history)
        metrics = write_validation_report(lambda name: staged.temp(out / name), built.model, splits[1], val_set,
                                          task, batch, placement, config.seed, fitted, probs=probs,
                                          trust=trust.summary if trust else None)
        counts = {"train": train_set.counts() if train_set is not None else {},
                  "val": val_set.counts() if val_set is not None else {}}
        header = prompt_header(
            built, task, config.backbone,
            metrics={"split": "validation", **(metrics.get("summary") or {})},
            training={"seed": config.seed, "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch,
                      "class_counts": counts, "data": config.data, "config_digest": config_digest(config)},
            trust=trust.stats if trust else None,
        )
        tensors = {**built.model.trained_state(), **(trust.tensors if trust else {})}
        save_prompt_file(staged.temp(out / PROMPTS_NAME), tensors, header)
        staged.commit()
    _record_trust(out / "run.json", trust.summary if trust else None)
    summary = metrics.get("summary")
    if summary is not None and trust is not None:
        summary = {**summary, **{k: trust.summary[k] for k in ("temperature", "ece_before", "ece_after")}}
    return out / PROMPTS_NAME, summary


def _record_trust(path: Path, summary: dict[str, Any] | None) -> None:
    """Add the trust section's summary (temperature, ECE before and after, quantiles) to ``run.json``."""
    from pathotune_cli.files import write_json

    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    write_json(path, {**record, "trust": summary})

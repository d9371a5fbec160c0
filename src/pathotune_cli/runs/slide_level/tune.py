"""``tune`` on a slide-level task: tile features into a MIL aggregator, three ways on one engine.

- ``--method linear``: the bare backbone's tile features, extracted once per slide (or read from
  ``--features``), and an aggregator trained on them.
- ``--prompts P`` (two-stage): the features of a tile-level prompt file tuned on the lab's tiles, then the same.
- ``--method pathotune`` or ``vpt`` (end to end): prompts and aggregator trained together from slide labels with
  the two-pass gradient (``training.mil_loop``).

The run folder is the tile-level one's (config, run record, history, metrics, curves, checkpoint), and the
prompt file holds the tile encoder's tensors and the aggregator, ``level: slide`` in its header.

Under ``torchrun`` end-to-end tuning shares every step's slides (``mil.slides_per_step``) among the ranks;
aggregator-only tuning (``linear``, two-stage) runs on rank 0 alone: it reads cached features and takes seconds
per epoch, so more processes would only add start-up time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.cluster import World
from pathotune_cli.config import RunConfig
from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.runs.per_slide.tiling import PlannedSlide, Tiling
from pathotune_cli.runs.records import add_to_run_record
from pathotune_cli.runs.results import TuneResult, config_digest
from pathotune_cli.runs.run_folder import PROMPTS_NAME
from pathotune_cli.runs.slide_level.evaluate import planned_slide
from pathotune_cli.training.distributed import SINGLE
from pathotune_cli.training.slide_data import SlideItem

if TYPE_CHECKING:
    import torch

    from pathotune_cli.engine import BuiltModel
    from pathotune_cli.engine.slide_model import SlideModel
    from pathotune_cli.hardware import Placement
    from pathotune_cli.runs.trust.fit import FittedTrust
    from pathotune_cli.training.distributed import Dist
    from pathotune_cli.training.loop import FitResult
    from pathotune_cli.training.mil_loop import Bags
    from pathotune_cli.training.slide_data import SlideSet
    from pathotune_cli.wsi.features_file import FeaturesFile


@dataclass
class _Encoder:
    """The slide model and how its tile features are made."""

    model: SlideModel
    built: BuiltModel
    source: str
    source_prompts: dict[str, str] | None


def tune_slides(config: RunConfig, *, resume: bool = False, allow_download: bool = False,
                report: Reporter = ignore, world: World | None = None, refused: Exception | None = None,
                on_failure: Callable[[str], None] | None = None) -> TuneResult:
    """Tune a slide-level model and write the run folder (or one per fold with ``folds``).

    ``world``: the ranks under ``torchrun`` (end to end only; aggregator-only tuning runs on rank 0 and the other
    ranks return at once with ``epochs_run`` 0). ``refused`` and ``on_failure``: as ``training.distributed.session``
    takes them (this rank's error from the checks before the run; what rank 0 does before another rank stops it).

    Raises:
        BadInput: bad slides CSV rows, features of another backbone, unreadable slides without
            ``skip_bad_slides``.
    """
    from pathotune_cli.runs.per_slide.devices import rank_placement
    from pathotune_cli.training.distributed import session
    from pathotune_cli.training.slide_data import read_slide_table, split_slides

    started = time.time()
    world = world or World()
    out = Path(config.out)
    if (out / PROMPTS_NAME).exists() and not resume:
        raise BadInput(f"{out} already holds a finished run", "choose another --out, or pass --resume to continue it")
    aggregator_only = bool(config.tile_prompts) or config.prompt.method == "linear"
    if world.distributed and aggregator_only:
        if refused is not None:  # no rank waits for another here
            raise refused
        if not world.main:
            return _idle_rank(config, world)
        note(report, f"aggregator-only tuning runs on rank 0 alone (the other {world.size - 1} rank(s) stop): "
                     "it reads cached features and takes seconds per epoch")
        world = World()
    slides = read_slide_table(config.data, config.task, config.features, lambda text: warn(report, text))
    placement = rank_placement(config.device, config.precision, config.backbone.precision, world)
    with session(world, placement.device, refused=refused, on_failure=on_failure) as dist:
        if dist.size > config.mil.slides_per_step:
            warn(report, f"mil.slides_per_step {config.mil.slides_per_step} < {dist.size} ranks: some ranks idle "
                         f"every step; --set mil.slides_per_step={dist.size} averages {dist.size} slides per step")
        if config.folds:
            return _cross_validate(config, slides, placement, resume, allow_download, report, started, dist)
        train, val, _ = split_slides(slides, config.train.val_fraction, config.seed)
        return _tune_split(config, out, train, val, placement, resume, allow_download, report, started, dist)


def _idle_rank(config: RunConfig, world: World) -> TuneResult:
    """What a rank other than 0 returns when rank 0 tunes alone."""
    return TuneResult(
        run=Path(config.out), prompts=Path(config.out) / PROMPTS_NAME, prompts_bytes=0, task=config.task.name,
        backbone=config.backbone.name, method=config.prompt.method, trainable_parameters=0, backbone_parameters=0,
        precision="", device="", train_images=0, val_images=0, epochs_run=0, best_epoch=0, stopped_early=False,
        early_stopping_on="", random_weights=False, resumed_from=None, seconds=0.0, instance_images_encoded=0,
        level="slide", world_size=world.size, rank=world.rank,
    )


def _tune_split(config: RunConfig, out: Path, train: SlideSet, val: SlideSet | None, placement: Placement,
                resume: bool, allow_download: bool, report: Reporter, started: float,
                dist: Dist = SINGLE) -> TuneResult:
    """One model on one split: encoder, bags, fit (every rank), prompt file (rank 0)."""
    from pathotune_cli.training.mil_loop import fit_mil

    encoder = _slide_encoder(config, allow_download, report)
    dist.agree("backbone (weights fingerprint)", encoder.built.backbone_fingerprint,
               "give every rank the same backbone weights (--weights on a file system all nodes see)")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        _start_run_folder(out, config, encoder, placement, train, val, started, dist)
    train, train_bags = _bags(encoder, train, config, out, placement, report)
    val_bags = None
    if val is not None:
        val, val_bags = _bags(encoder, val, config, out, placement, report)
    fitted = fit_mil(encoder.model, train_bags, val_bags, config.train, config.mil, placement, config.seed,
                     checkpoint=out / "checkpoint.safetensors", resume=resume, config_digest=config_digest(config),
                     report=report, kernels=config.runtime.kernels, dist=dist)
    validation, prompts = None, out / PROMPTS_NAME
    if dist.main:
        add_to_run_record(out / "run.json", kernels=fitted.kernels)
        validation, trust = _validation_report(out, encoder, val, val_bags, config, placement, fitted, report)
        prompts = _save(out, config, encoder, train, val, fitted, validation, trust)
    model = encoder.model
    return TuneResult(
        run=out, prompts=prompts, prompts_bytes=prompts.stat().st_size if dist.main else 0, task=config.task.name,
        backbone=config.backbone.name if encoder.source_prompts is None else model.tiles.backbone.preset.name,
        method=f"{model.aggregator.kind} on {encoder.source} features",
        trainable_parameters=model.trainable_parameters(), backbone_parameters=model.tiles.backbone_parameters(),
        precision=placement.precision, device=placement.device, train_images=len(train),
        val_images=len(val) if val is not None else 0, epochs_run=len(fitted.history), best_epoch=fitted.best_epoch,
        stopped_early=fitted.stopped_early,
        early_stopping_on=f"validation {config.train.monitor}" if val is not None else "training loss",
        random_weights=model.tiles.backbone.weight_source.kind == "random", resumed_from=fitted.resumed_from,
        seconds=round(time.time() - started, 2), instance_images_encoded=model.tiles.instance_images_encoded,
        validation=validation, history=fitted.history, level="slide", kernels=fitted.kernels,
        world_size=dist.size, rank=dist.rank,
    )


def _cross_validate(config: RunConfig, slides: SlideSet, placement: Placement, resume: bool, allow_download: bool,
                    report: Reporter, started: float, dist: Dist = SINGLE) -> TuneResult:
    """Patient-grouped stratified K-fold: one model per fold in ``RUN/fold-K``, metrics per fold and mean ± sd."""
    from pathotune_cli.files import write_json
    from pathotune_cli.training.slide_data import patient_folds

    pool = slides.subset([i for i, item in enumerate(slides.items) if item.split != "test"])
    folds = patient_folds(pool, int(config.folds or 2), config.seed)
    results = []
    for k, val_index in enumerate(folds, start=1):
        note(report, f"fold {k}/{len(folds)}: {len(val_index)} validation slides")
        train_index = sorted(set(range(len(pool))) - set(val_index))
        out = Path(config.out) / f"fold-{k}"
        results.append(_tune_split(config, out, pool.subset(train_index), pool.subset(val_index), placement,
                                   resume, allow_download, report, time.time(), dist))
    summary = _fold_summary(results)
    if dist.main:
        write_json(Path(config.out) / "cv_metrics.json", summary)
    best = results[0]
    return TuneResult(**{**best.__dict__, "run": Path(config.out), "validation": summary["mean"],
                         "seconds": round(time.time() - started, 2), "folds": summary["folds"]})


def _fold_summary(results: list[TuneResult]) -> dict[str, Any]:
    folds = [{"fold": k, "prompts": str(r.prompts), "validation": r.validation} for k, r in enumerate(results, 1)]
    names = sorted({n for r in results for n, v in (r.validation or {}).items() if v is not None})
    values = {n: [r.validation[n] for r in results if r.validation and r.validation.get(n) is not None] for n in names}
    return {"folds": folds,
            "mean": {n: float(np.mean(v)) for n, v in values.items()},
            "sd": {n: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()}}


def _slide_encoder(config: RunConfig, allow_download: bool, report: Reporter) -> _Encoder:
    """The tile encoder the run asks for, with a fresh aggregator on top.

    The encoder is the bare backbone (``linear``), a tile-level prompt file (two-stage), or fresh prompts.
    """
    import torch

    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine import build_prompted_model, random_weights_warning
    from pathotune_cli.engine.slide_model import make_slide_model

    torch.manual_seed(config.seed)
    kind = config.mil.aggregator or config.task.aggregator
    if config.tile_prompts:
        built, source_prompts = _two_stage(config)
        source = "prompts"
    else:
        settings = config.prompt if config.prompt.method != "linear" else PromptSettings(method="linear")
        built = build_prompted_model(config.task, config.backbone, settings, config.weights, allow_download)
        source, source_prompts = ("backbone" if settings.method == "linear" else "end-to-end"), None
    model = make_slide_model(built.model, len(config.task.classes), config.mil, kind)
    note(report, f"{kind} on {source} tile features of {built.model.backbone.preset.name} "
                 f"({model.feature_dim}-d); {config.task.name}: {', '.join(config.task.class_names)}")
    if random_weights_warning(built.model):
        warn(report, str(random_weights_warning(built.model)))
    return _Encoder(model, built, source, source_prompts)


def _two_stage(config: RunConfig) -> tuple[BuiltModel, dict[str, str]]:
    """The tile encoder of a tile-level prompt file (its head unused), as a ``BuiltModel``."""
    from pathotune_cli.engine import BuiltModel, load_prompted_model
    from pathotune_cli.files import sha256_file

    prompted, file = load_prompted_model(config.tile_prompts, config.weights)
    header = file.header
    if header.stain is not None:
        raise BadInput(f"{file.path} normalises stain ({header.stain.method}); slide-level files do not carry it yet",
                       "tune the tile prompts without --stain for two-stage slide-level use")
    built = BuiltModel(prompted, header.backbone.fingerprint,
                       header.instance_encoder.preset if header.instance_encoder else None,
                       header.instance_encoder.fingerprint if header.instance_encoder else None,
                       header.text_encoder, list(header.texts))
    return built, {"path": str(file.path.resolve()), "sha256": sha256_file(file.path), "task": header.task.name}


def _bags(encoder: _Encoder, slides: SlideSet, config: RunConfig, out: Path, placement: Placement,
          report: Reporter) -> tuple[SlideSet, Bags]:
    """(the usable slides, their ``Bags``): cached features for linear/two-stage, tiles for end to end."""
    from pathotune_cli.runs.slide_level.tiles import SlideTileBags
    from pathotune_cli.training.mil_loop import Bags

    kept, features, planned = [], [], []
    for item in slides.items:
        try:
            if encoder.source == "end-to-end":
                planned.append(_plan(item, config))
            else:
                features.append(_features_of(encoder, item, config, out, placement, report))
            kept.append(item)
        except PathotuneError as exc:
            if not config.skip_bad_slides:
                raise BadInput(exc.one_line(), "fix or remove the slide, or pass --skip-bad-slides") from None
            warn(report, f"skipped {item.slide_id}: {exc.one_line()}")
    from pathotune_cli.training.slide_data import SlideSet

    usable = SlideSet(tuple(kept), slides.class_names, slides.source)
    if encoder.source == "end-to-end":
        return usable, Bags(usable.labels, tiles=SlideTileBags(planned))
    return usable, Bags(usable.labels, features=features)


def _plan(item: SlideItem, config: RunConfig) -> PlannedSlide:
    if item.path is None:
        raise BadInput(f"{item.slide_id}: end-to-end tuning reads the slide itself, and only its features are given",
                       "list the slide files in the CSV, or use --method linear with --features")
    return planned_slide(item, _tiling(config))


def _tiling(config: RunConfig) -> Tiling:
    """How this run cuts slides: the task's tile mpp and size, ``--default-mpp`` (and each slide's CSV mpp)."""
    return Tiling(config.task.tile.mpp, config.task.tile.size, default_mpp=config.default_mpp)


def _features_of(encoder: _Encoder, item: SlideItem, config: RunConfig, out: Path, placement: Placement,
                 report: Reporter) -> torch.Tensor:
    """A slide's tile features: from ``--features``, from this run's cache, or computed now and cached."""
    import torch

    from pathotune_cli.files import Staging
    from pathotune_cli.formats import features_path
    from pathotune_cli.runs.slide_level.tiles import slide_features
    from pathotune_cli.wsi.features_file import read_features, write_features

    given = features_path(config.features, item.slide_id) if config.features else None
    cached = out / "features" / f"{item.slide_id}.h5"
    for path in (given, cached if cached.is_file() else None):
        if path is not None:
            return torch.from_numpy(_checked(read_features(path), encoder, path).features)
    slide = planned_slide(item, _tiling(config))
    encoded = slide_features(encoder.model, slide, placement, 64, report, _tiling(config).max_damaged)
    values, slide = encoded.values[0], dataclasses.replace(slide, coords=encoded.coords(slide))
    attrs = {"encoder": encoder.built.model.backbone.preset.name,
             "backbone_fingerprint": encoder.built.backbone_fingerprint, "feature_kind": encoder.source,
             "prompts_sha256": (encoder.source_prompts or {}).get("sha256", "")}
    with Staging() as staged:
        write_features(staged.temp(cached), values, slide.coords, slide.plan.h5_attrs(), attrs)
        staged.commit()
    return torch.from_numpy(values)


def _checked(found: FeaturesFile, encoder: _Encoder, path: Path) -> FeaturesFile:
    """Features made by this encoder: the same backbone (fingerprint, where the file states it) and width."""
    fingerprint = found.fingerprint
    expected = encoder.built.backbone_fingerprint
    if fingerprint is not None and fingerprint != expected:
        raise BadInput(f"{path} holds features of another backbone (fingerprint {fingerprint}, this run's "
                       f"{encoder.built.model.backbone.preset.name} is {expected})",
                       "extract them again with `pathotune features`, or pass --backbone of the model that made them")
    source_sha = (encoder.source_prompts or {}).get("sha256", "")
    if fingerprint is not None and found.feature_attrs.get("prompts_sha256", "") != source_sha:
        raise BadInput(f"{path} holds features of another prompt file than this run's",
                       "extract them with the same --prompts, or leave out --features")
    if found.features.shape[1] != encoder.model.feature_dim:
        raise BadInput(f"{path}: {found.features.shape[1]}-d features, but this run's encoder makes "
                       f"{encoder.model.feature_dim}-d ones", "pass the features of this backbone")
    return found


def _start_run_folder(out: Path, config: RunConfig, encoder: _Encoder, placement: Placement, train: SlideSet,
                      val: SlideSet | None, started: float, dist: Dist = SINGLE) -> None:
    from pathotune_cli.files import write_csv, write_json, write_yaml
    from pathotune_cli.runs.records import provenance
    from pathotune_cli.runs.run_folder import started_record

    write_yaml(out / "config.yaml", config.model_dump(mode="json"))
    write_json(out / "run.json", provenance(started_record({
        "seed": config.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "level": "slide", "tile_source": encoder.source, "aggregator": encoder.model.aggregator.kind,
        "backbone_fingerprint": encoder.built.backbone_fingerprint,
        "placement": {"device": placement.device, "precision": placement.precision, "reason": placement.reason},
        "config_digest": config_digest(config),
        "random_weights": encoder.model.tiles.backbone.weight_source.kind == "random",
        **dist.describe(config.mil.slides_per_step),
    })))
    rows = [(item.slide_id, str(item.path or ""), item.patient, train.class_names[item.label], split)
            for split, data in (("train", train), ("val", val)) if data is not None for item in data.items]
    write_csv(out / "data_manifest.csv", ("slide_id", "path", "patient", "label", "split"), rows)


def _validation_report(out: Path, encoder: _Encoder, val: SlideSet | None, val_bags: Bags | None, config: RunConfig,
                       placement: Placement, fitted: FitResult,
                       report: Reporter) -> tuple[dict[str, float | None] | None, FittedTrust | None]:
    """Slide-level metrics, predictions, confusion matrix, ROC, curves, and the trust section of the validation slides.

    The trust section holds the temperature and the conformal quantiles, not OOD statistics (those are per tile).
    Returns (the metrics' values, the ``FittedTrust`` or None).
    """
    from pathotune_cli.runs.slide_level.evaluate import write_slide_report
    from pathotune_cli.runs.trust.fit import fit_trust
    from pathotune_cli.runs.tune_outputs import write_history
    from pathotune_cli.training.calibration import softmax
    from pathotune_cli.training.mil_loop import slide_logits
    from pathotune_cli.training.plots import save_history_curves

    if fitted.history:
        save_history_curves(fitted.history, out / "curves.png")
    write_history(out / "history.csv", fitted.history)
    if val is None or not len(val):
        warn(report, "no validation slides: no temperature or prediction sets in the prompt file")
        return None, None
    logits, _ = slide_logits(encoder.model, val_bags, config.mil, placement)
    scores = write_slide_report(out, val, softmax(logits), config.task, seed=config.seed, prefix="val_",
                                title="validation")
    trust = fit_trust(logits, val.labels, None, None, None, config.task.class_names, report, unit="slides")
    add_to_run_record(out / "run.json", trust=trust.summary)
    values = {k: v["value"] for k, v in scores["metrics"].items()}
    return {**values, **{k: trust.summary[k] for k in ("temperature", "ece_before", "ece_after")}}, trust


def _save(out: Path, config: RunConfig, encoder: _Encoder, train: SlideSet, val: SlideSet | None, fitted: FitResult,
          validation: dict[str, float | None] | None, trust: FittedTrust | None) -> Path:
    from pathotune_cli.engine import prompt_header, save_prompt_file

    mil = config.mil.model_copy(update={"aggregator": encoder.model.aggregator.kind})
    counts = {"train": train.counts(), "val": val.counts() if val is not None else {}}
    header = prompt_header(
        encoder.built, config.task, encoder.built.model.backbone.preset,
        metrics={"split": "validation", **(validation or {})},
        training={"seed": config.seed, "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch,
                  "class_counts": counts, "data": config.data, "config_digest": config_digest(config)},
        slide={"level": "slide", "mil": mil, "tile_source": encoder.source,
               "source_prompts": encoder.source_prompts,
               "trainable_parameters": encoder.model.trainable_parameters()},
        trust=trust.stats if trust is not None else None,
    )
    tensors = {**encoder.model.trained_state(), **(trust.tensors if trust is not None else {})}
    return save_prompt_file(out / PROMPTS_NAME, tensors, header)

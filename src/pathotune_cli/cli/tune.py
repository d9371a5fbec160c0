"""``pathotune tune``: tune prompts for a task preset on labelled tiles."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from pathotune_cli.cli import render
from pathotune_cli.cli.options import DefaultMppOpt, JsonOpt, SetOpt, SweepOpt, WeightsOpt, above_zero
from pathotune_cli.cli.render import emit_json, key_values, table, user_errors

DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="ImageFolder tree, CSV with path,label[,split], or labels.csv of slide tiles.")]
MethodOpt = Annotated[str | None, typer.Option("--method", help=(
    "pathotune (TVP+TTP+IVP), vpt, linear, full, lora, prototypes, knn or zeroshot (no --data needed)."))]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Run folder (default: runs/tune, under the lab's out root).")]
LrOpt = Annotated[float | None, typer.Option("--lr", callback=above_zero, help="Peak learning rate (default: 1e-3).")]
TilePromptsOpt = Annotated[Path | None, typer.Option(
    "--prompts", help="Slide-level tasks, two-stage: a tile-level prompt file whose features feed the aggregator.")]
StainOpt = Annotated[str | None, typer.Option(
        "--stain", help="Stain normalisation inside the model: macenko, reinhard or none (default: none).")]
StainReferenceOpt = Annotated[Path | None, typer.Option(
        "--stain-reference", help="Image or folder to fit --stain to (default: a seeded sample of the training "
        "tiles).")]
FeaturesOpt = Annotated[Path | None, typer.Option(
    "--features", help="Slide-level tasks: a folder of per-slide features .h5 to reuse (ours, TRIDENT, CLAM).")]
FoldsOpt = Annotated[int | None, typer.Option(
    "--folds", min=2, max=20, help="Slide-level tasks: patient-grouped stratified K-fold cross-validation.")]
SkipBadSlidesOpt = Annotated[bool, typer.Option(
    "--skip-bad-slides", help="Slide-level tasks: list unreadable slides and go on without them.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue a killed run from its last checkpoint.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Start again in a folder that holds a run (its files are "
                                        "replaced).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Allow downloading missing weights.")]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help="Backbone preset name or YAML path (default: the lab's, `pathotune config set backbone`, else the "
        "task's recommended backbone; random weights only when named: tiny-random).",
    ),
]


@user_errors
def tune(
    preset: Annotated[str | None, typer.Option("--preset", help="Task preset name or YAML path (e.g. crc).")] = None,
    data: DataOpt = None,
    backbone: BackboneOpt = None,
    method: MethodOpt = None,
    out: OutOpt = None,
    config: Annotated[Path | None, typer.Option("--config", help="Rerun from a RUN/config.yaml.")] = None,
    set_: SetOpt = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default: 20).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step [32].")] = None,
    lr: LrOpt = None,
    shots: Annotated[int | None, typer.Option("--shots", min=1, help="Few-shot: images per class, seeded.")] = None,
    stain: StainOpt = None,
    stain_reference: StainReferenceOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for split, sampling and init (default: 0).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    weights: WeightsOpt = None,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="A separate validation set.")] = None,
    prompts: TilePromptsOpt = None,
    features: FeaturesOpt = None,
    folds: FoldsOpt = None,
    default_mpp: DefaultMppOpt = None,
    skip_bad_slides: SkipBadSlidesOpt = False,
    sweep: SweepOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    download: DownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Tune prompts for a task on labelled tiles; writes RUN/prompts.safetensors and the run record.

    Under `torchrun --nproc-per-node N -m pathotune_cli tune ...` (or srun) the ranks train together.
    """
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.cluster import world_from_env
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    world = world_from_env()
    with contextlib.nullcontext() if world.main else render.other_rank(world.rank):  # rank 0 prints the rest
        opts = TuneOptions(
            preset=preset, data=data, backbone=backbone, method=method, out=out, config=config,
            sets=tuple(set_ or ()), epochs=epochs, batch_size=batch_size, lr=lr, shots=shots, seed=seed,
            stain=stain, stain_reference=stain_reference,
            precision=precision, device=device, weights=weights, val_data=val_data, tile_prompts=prompts,
            features=features, folds=folds, skip_bad_slides=skip_bad_slides, download=download,
            default_mpp=default_mpp,
        )
        if sweep:
            _sweep(opts, sweep, resume, force, download, json_out, world)
            return
        cfg = resolve_config(opts)
        with ProgressDisplay(quiet=not world.main) as progress:
            result = tune_run(cfg, resume=resume, force=force, allow_download=download, report=progress, world=world)
    if world.main and json_out:
        emit_json(result.to_dict())
    elif world.main:
        _render(result)


def _sweep(opts: Any, sweep: list[str], resume: bool, force: bool, download: bool, json_out: bool,
           world: Any) -> None:
    """``--sweep``: every combination, one after another; the best member's summary and the sweep's table."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.errors import BadInput
    from pathotune_cli.runs.sweep import sweep_run

    if resume or world.size > 1:
        raise BadInput("--sweep runs in one process and does not resume", "drop --resume (or torchrun) with --sweep")
    with ProgressDisplay() as progress:
        result = sweep_run(opts, sweep, force=force, allow_download=download, report=progress)
    if json_out:
        emit_json(result.to_dict())
        return
    keys = list(result.members[0].values)
    table(f"sweep: best by {result.metric} kept as {result.prompts}", ["member", *keys, result.metric, "seconds", ""],
          [[m.index, *m.values.values(), f"{m.metric:.4f}", m.seconds, "best" if m.best else ""]
           for m in result.members])
    _render(dataclasses.replace(result.best, prompts=result.prompts))  # the run's copy of the best file


def _render(result: Any) -> None:
    epochs_line = f"{result.epochs_run} (best {result.best_epoch}{', stopped early' if result.stopped_early else ''})"
    unit = result.unit
    key_values(f"tuned {result.method} on {result.backbone} for {result.task}", {
        "prompt file": f"{result.prompts} ({result.prompts_bytes / 1024:.0f} KiB)",
        "trainable": f"{result.trainable_parameters:,} ({result.trainable_share:.2%} of backbone)",
        unit: f"{result.train_images} train, {result.val_images} validation",
        "epochs": epochs_line,
        "early stopping on": result.early_stopping_on,
        **{f"val {k}": v for k, v in (result.validation or {}).items() if v is not None},
        "precision": f"{result.precision} on {result.device}"
                     + (f" x {result.world_size} ranks" if result.world_size > 1 else ""),
        "kernels": result.kernels.get("backbone", "") or "n/a",
        "seconds": result.seconds,
    })

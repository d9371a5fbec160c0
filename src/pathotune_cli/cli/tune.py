"""``pathotune tune``: tune prompts for a task preset on labelled tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt, SetOpt, path_str
from pathotune_cli.cli.render import emit_json, key_values, user_errors


@user_errors
def tune(
    preset: Annotated[str | None, typer.Option("--preset", help="Task preset name or YAML path (e.g. crc).")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="ImageFolder tree or CSV with path,label[,split].")
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone",
            help="Backbone preset name or YAML path (default: the lab's, `pathotune config set backbone`, else the "
            "task's recommended backbone; random weights only when named: tiny-random).",
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="pathotune (TVP+TTP+IVP), vpt, linear or full.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/tune, under the lab's out root).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Rerun from a RUN/config.yaml.")] = None,
    set_: SetOpt = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default: 20).")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Images per step (default: 32).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0, help="Peak learning rate (default: 1e-3).")] = None,
    shots: Annotated[int | None, typer.Option("--shots", min=1, help="Few-shot: images per class, seeded.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for split, sampling and init (default: 0).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Backbone weight file or folder.")] = None,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="A separate validation set.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from its last checkpoint.")] = False,
    download: Annotated[bool, typer.Option("--download", help="Allow downloading missing weights.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Tune prompts for a task on labelled tiles; writes RUN/prompts.safetensors and the run record."""
    from pathotune_cli.cli.progress import EpochProgress
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    opts = TuneOptions(
        preset=preset, data=path_str(data), backbone=backbone, method=method, out=path_str(out),
        config=path_str(config), sets=list(set_ or []), epochs=epochs, batch_size=batch_size, lr=lr, shots=shots,
        seed=seed, precision=precision, device=device, weights=path_str(weights), val_data=path_str(val_data),
        download=download,
    )
    cfg = resolve_config(opts)
    with EpochProgress() as progress:
        summary = tune_run(cfg, resume=resume, report=progress, allow_download=download)
    if json_out:
        emit_json(summary)
        return
    val = summary.get("validation") or {}
    key_values(
        f"tuned {summary['method']} on {summary['backbone']} for {summary['task']}",
        {
            "prompt file": f"{summary['prompts']} ({summary['prompts_bytes'] / 1024:.0f} KiB)",
            "trainable": f"{summary['trainable_parameters']:,} ({summary['trainable_share']:.2%} of backbone)",
            "images": f"{summary['train_images']} train, {summary['val_images']} validation",
            "epochs": (
                f"{summary['epochs_run']} (best {summary['best_epoch']}"
                f"{', stopped early' if summary['stopped_early'] else ''})"
            ),
            **{f"val {k}": v for k, v in val.items() if v is not None},
            "precision": f"{summary['precision']} on {summary['device']}",
            "seconds": summary["seconds"],
        },
    )

"""``pathotune predict``: map a prompt file over whole slides, images and folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pathotune_cli.cli.options import (
    AlphaOpt,
    CoordsOpt,
    DefaultMppOpt,
    DeviceOpt,
    DevicesOpt,
    JsonOpt,
    KernelsOpt,
    MaxDamagedOpt,
    MinTissueOpt,
    PrecisionOpt,
    PromptsOpt,
    ReportOpt,
    RoiClassOpt,
    RoiOpt,
    ShardOpt,
    SlidesCsvOpt,
    TissueChoice,
    TissueGeojsonOpt,
    TissueOpt,
    UncalibratedOpt,
    WeightsOpt,
    choose_prompts,
    device_workers,
)
from pathotune_cli.cli.render import emit_json, info, table, user_errors

if TYPE_CHECKING:
    from pathotune_cli.runs.per_slide.rows import SlideRow
    from pathotune_cli.runs.predict import PredictResult

InputsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Slides, tile images, or folders of either (a prompt file first still works: PROMPTS SLIDE...).",
        show_default=False,
    ),
]
ReadersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", min=0, max=64, show_default=False,
        help="Tile-reading processes (0: in-process). Default: 0 on a CPU, whose cores the model needs; 2 with a GPU.",
    ),
]
HeatmapClassOpt = Annotated[
    str | None, typer.Option("--heatmap-class", help="Colour the heatmap by this class's probability.")
]
ExplainTopOpt = Annotated[
    int,
    typer.Option("--explain-top", min=0, max=1000,
                 help="Explain the K most confident tiles of each class per slide (PNGs in OUT/<slide>.explain/)."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Keep slides finished earlier with the same file, prompts and settings.")
]


@user_errors
def predict(
    inputs: InputsArg = None,
    prompts: PromptsOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder [default: predictions].", show_default=False)
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Tiles per batch.")] = 64,
    workers: ReadersOpt = None,
    coords: CoordsOpt = None,
    slides_csv: SlidesCsvOpt = None,
    min_tissue: MinTissueOpt = 0.25,
    tissue: TissueOpt = TissueChoice.otsu,
    tissue_geojson: TissueGeojsonOpt = None,
    default_mpp: DefaultMppOpt = None,
    heatmap_class: HeatmapClassOpt = None,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    kernels: KernelsOpt = "auto",
    resume: ResumeOpt = False,
    alpha: AlphaOpt = None,
    uncalibrated: UncalibratedOpt = False,
    explain_top: ExplainTopOpt = 0,
    shard: ShardOpt = None,
    devices: DevicesOpt = None,
    max_damaged: MaxDamagedOpt = 0.05,
    roi: RoiOpt = None,
    roi_class: RoiClassOpt = None,
    write_report: ReportOpt = True,
    strict: Annotated[bool, typer.Option("--strict", help="Fail a slide unlike the slides the model was tuned on "
                                         "(another stain or modality) instead of warning.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict a task over slides (CSV, GeoJSON for QuPath, heatmap, summary) and tile images (predictions.csv)."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.cluster import resolve_shard
    from pathotune_cli.config.lab import output_folder
    from pathotune_cli.runs.per_slide.devices import run_command
    from pathotune_cli.runs.predict import PREDICT, PredictOptions

    workers_on = device_workers(devices, device)
    prompts, rest = choose_prompts(prompts, list(inputs or []))
    opts = PredictOptions(
        prompts=prompts, inputs=tuple(rest), out=output_folder("predict", out), batch_size=batch_size,
        workers=workers, precision=precision, device=device, weights=weights, coords=coords, min_tissue=min_tissue,
        tissue=tissue.value, tissue_geojson=tissue_geojson, slides_csv=slides_csv, default_mpp=default_mpp,
        heatmap_class=heatmap_class, resume=resume, kernels=kernels, alpha=alpha, uncalibrated=uncalibrated,
        explain_top=explain_top, roi=roi, roi_class=roi_class, report=write_report, strict=strict,
        max_damaged=max_damaged,
        shard=resolve_shard(shard),
    )
    with ProgressDisplay() as progress:
        result = run_command(PREDICT, opts, workers_on, progress)
    if json_out:
        emit_json(result.to_dict())
    else:
        _render(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _render(result: PredictResult) -> None:
    if result.slides:
        table(f"predictions in {result.out} ({result.seconds} s)",
              ["slide", "status", "tiles", "mpp", "top class", "OOD flagged"],
              [(r.name, _status(r), r.tiles, r.mpp if r.mpp is not None else "", _top(r, result.classes),
                _share(r.column("ood_fraction"))) for r in result.slides])
        info(f"per-slide CSV, GeoJSON and heatmap, and summary.csv are in {result.out}")
    if result.images is not None:
        flagged = "" if result.images.flagged is None else f" ({result.images.flagged} flagged out of distribution)"
        info(f"{result.images.images} images -> {result.images.file}{flagged}")
    info(f"probabilities: {result.probabilities}")


def _status(row: SlideRow) -> str:
    if row.status == "locked":
        return "locked (another process is on it)"
    return row.status + (f" ({row.resume})" if row.resume else "")


def _share(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, float) else ""


def _top(row: SlideRow, classes: list[str]) -> str:
    if row.status != "ok" or not row.tiles:
        return ""
    label = row.column("label")
    if label:  # a slide-level model: the slide's class and its probability
        shown = f"{label} (p {float(row.column(f'prob_{label}') or 0.0):.2f})"
        chosen = row.column("prediction_set")
        return shown + (f", set {chosen or '(empty)'}" if chosen is not None else "")
    fractions = {c: float(row.column(f"fraction_{c}") or 0.0) for c in classes}
    best = max(fractions, key=fractions.__getitem__)
    return f"{best} ({fractions[best]:.0%})"

"""``pathotune features``: per-slide tile features (TRIDENT-style h5) of a backbone or a prompt file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import (
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
    RoiClassOpt,
    RoiOpt,
    ShardOpt,
    SlidesCsvOpt,
    TissueChoice,
    TissueGeojsonOpt,
    TissueOpt,
    WeightsOpt,
    device_workers,
)
from pathotune_cli.cli.render import emit_json, table, user_errors

SlidesArg = Annotated[list[Path] | None, typer.Argument(help="Slide files or folders of slides.", show_default=False)]


@user_errors
def features(
    slides: SlidesArg = None,
    prompts: PromptsOpt = None,
    backbone: Annotated[str | None, typer.Option("--backbone", help="A backbone preset, for bare features.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder [default: features].",
                                             show_default=False)] = None,
    slides_csv: SlidesCsvOpt = None,
    mpp: Annotated[float | None, typer.Option(
        "--mpp", min=0.05, max=16.0, help="Tile mpp with --backbone (default: the backbone's, else 0.5)."
    )] = None,
    tile_size: Annotated[int | None, typer.Option("--tile-size", min=8, max=8192,
                                                  help="Tile side with --backbone [default: 224].")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Tiles per batch.")] = 64,
    min_tissue: MinTissueOpt = 0.25,
    tissue: TissueOpt = TissueChoice.otsu,
    tissue_geojson: TissueGeojsonOpt = None,
    coords: CoordsOpt = None,
    default_mpp: DefaultMppOpt = None,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    kernels: KernelsOpt = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Keep slides finished earlier with these settings.")] = False,
    shard: ShardOpt = None,
    devices: DevicesOpt = None,
    max_damaged: MaxDamagedOpt = 0.05,
    roi: RoiOpt = None,
    roi_class: RoiClassOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Extract tile features per slide: <slide>.h5 with features and coords, as TRIDENT and CLAM read them."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.cluster import resolve_shard
    from pathotune_cli.config.lab import output_folder
    from pathotune_cli.runs.features import FEATURES, FeaturesOptions
    from pathotune_cli.runs.per_slide.devices import run_command

    workers_on = device_workers(devices, device)
    opts = FeaturesOptions(
        slides=tuple(slides or ()), slides_csv=slides_csv, out=output_folder("features", out), prompts=prompts,
        backbone=backbone, weights=weights, mpp=mpp, tile_size=tile_size, batch_size=batch_size,
        min_tissue=min_tissue, tissue=tissue.value, tissue_geojson=tissue_geojson, coords=coords,
        default_mpp=default_mpp, precision=precision, device=device,
        resume=resume, roi=roi, roi_class=roi_class, max_damaged=max_damaged, kernels=kernels,
        shard=resolve_shard(shard),
    )
    with ProgressDisplay() as progress:
        result = run_command(FEATURES, opts, workers_on, progress)
    if json_out:
        emit_json(result.to_dict())
    else:
        table(f"features in {result.out} ({result.encoder}, {result.feature_dim}-d; {result.seconds} s)",
              ["slide", "status", "tiles", "seconds"],
              [(r.name, r.status + (f" ({r.resume})" if r.resume else ""), r.tiles, r.seconds)
               for r in result.rows])
    if result.exit_code:
        raise typer.Exit(result.exit_code)

"""``pathotune tile``: cut slides into tile coordinates at a physical resolution, with tissue detection."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pathotune_cli.cli.options import (
    DefaultMppOpt,
    DevicesOpt,
    JsonOpt,
    MaxDamagedOpt,
    MinTissueOpt,
    ShardOpt,
    SlidesCsvOpt,
    TissueChoice,
    TissueGeojsonOpt,
    TissueOpt,
    device_workers,
)
from pathotune_cli.cli.render import emit_json, table, user_errors
from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from pathotune_cli.runs.tile import TileResult

DEFAULT_MPP = 0.5


class TileFormat(str, Enum):
    """Image formats for --save-tiles."""

    png = "png"
    jpg = "jpg"


LabelsOpt = Annotated[
    Path | None,
    typer.Option("--labels", help="QuPath annotations (File > Export objects as GeoJSON): one slide's .geojson, a "
                 "folder of <slide>.geojson, or a CSV slide,labels; writes labels.csv for tune --data."),
]
LabelsPresetOpt = Annotated[
    str | None, typer.Option("--preset", help="With --labels: the task whose classes the annotations name.")
]
MinLabelCoverOpt = Annotated[float | None, typer.Option(
    "--min-label-cover", min=0.01, max=1.0, show_default=False,
    help="With --labels: share of a tile a region must cover to label it [default: 0.5].")]
SlidesArg = Annotated[
    list[Path] | None, typer.Argument(help="Slide files or folders of slides.", show_default=False)
]
TargetMppOpt = Annotated[
    float | None,
    typer.Option("--mpp", min=0.05, max=16.0, help=f"Target microns per pixel [default: {DEFAULT_MPP}]."),
]
MagOpt = Annotated[
    float | None,
    typer.Option("--mag", min=0.5, max=100.0, help="Target magnification instead of --mpp (e.g. 20)."),
]
TileSizeOpt = Annotated[
    int, typer.Option("--tile-size", min=8, max=8192, help="Tile side in pixels at the target resolution.")
]
OverlapOpt = Annotated[int, typer.Option("--overlap", min=0, help="Overlap between tiles, in target pixels.")]
SaveTilesOpt = Annotated[
    TileFormat | None, typer.Option("--save-tiles", case_sensitive=False, help="Also write tile images.")
]
SlideWorkersOpt = Annotated[
    int, typer.Option("--workers", min=0, max=256, help="Slides processed in parallel.")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Skip slides already tiled with these settings.")]


@user_errors
def tile(
    slides: SlidesArg = None,
    slides_csv: SlidesCsvOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder [default: tiles].", show_default=False)
    ] = None,
    mpp: TargetMppOpt = None,
    mag: MagOpt = None,
    tile_size: TileSizeOpt = 224,
    overlap: OverlapOpt = 0,
    min_tissue: MinTissueOpt = 0.25,
    tissue: TissueOpt = TissueChoice.otsu,
    tissue_geojson: TissueGeojsonOpt = None,
    default_mpp: DefaultMppOpt = None,
    save_tiles: SaveTilesOpt = None,
    workers: SlideWorkersOpt = 1,
    resume: ResumeOpt = False,
    shard: ShardOpt = None,
    devices: DevicesOpt = None,
    max_damaged: MaxDamagedOpt = 0.05,
    labels: LabelsOpt = None,
    preset: LabelsPresetOpt = None,
    min_label_cover: MinLabelCoverOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tile slides at a physical resolution: coords .h5, tissue GeoJSON, thumbnail and manifest.csv.

    --devices N entries start N shard processes (tiling runs on CPUs whatever the entries say).
    """
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.cluster import resolve_shard
    from pathotune_cli.config.lab import output_folder
    from pathotune_cli.runs.per_slide.devices import run_command
    from pathotune_cli.runs.tile import TILE, TileConfig

    if mpp is not None and mag is not None:
        raise BadInput(f"--mpp {mpp} and --mag {mag} exclude each other", "give one of them")
    if not slides and slides_csv is None:
        raise BadInput("no slides given", "pass slide files or folders, or --slides-csv FILE")
    if overlap >= tile_size:
        raise BadInput(f"--overlap {overlap} is out of range (allowed: 0 to {tile_size - 1}, below --tile-size)")
    config = TileConfig(
        slides=tuple(slides or ()), out=output_folder("tile", out), slides_csv=slides_csv,
        target_mpp=None if mag is not None else (mpp if mpp is not None else DEFAULT_MPP), mag=mag,
        tile_size=tile_size, overlap=overlap, min_tissue=min_tissue, tissue=tissue.value,
        tissue_geojson=tissue_geojson, default_mpp=default_mpp,
        save_tiles=save_tiles.value if save_tiles is not None else None, workers=workers, resume=resume,
        max_damaged=max_damaged, labels=labels, preset=preset, min_label_cover=min_label_cover,
        shard=resolve_shard(shard),
    )
    with ProgressDisplay() as progress:
        result = run_command(TILE, config, device_workers(devices), progress)
    if json_out:
        emit_json(result.to_dict())
    else:
        _render(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _render(result: TileResult) -> None:
    failed = f"; {result.failed} failed (errors above and in manifest.csv)" if result.failed else ""
    table(
        f"tiles in {result.out}{failed}",
        ["slide", "status", "tiles", "level", "mpp", "mpp source", "seconds"],
        [
            (
                Path(r.slide).name,
                f"{r.status} ({r.resume})" if r.resume else r.status,
                r.tiles,
                _blank(r.level),
                _blank(r.mpp),
                r.mpp_source,
                f"{r.seconds:.1f}",
            )
            for r in result.rows
        ],
    )


def _blank(value: object) -> object:
    return "" if value is None else value

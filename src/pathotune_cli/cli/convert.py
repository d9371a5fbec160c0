"""``pathotune convert``: any slide pathotune reads to a tiled pyramidal TIFF that every tool opens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import (
    DevicesOpt,
    JsonOpt,
    MaxDamagedOpt,
    ShardOpt,
    SlidesCsvOpt,
    device_workers,
)
from pathotune_cli.cli.render import emit_json, table, user_errors

SlidesArg = Annotated[list[Path] | None, typer.Argument(help="Slide files or folders of slides, or - for a list "
                                                             "on standard input.", show_default=False)]


@user_errors
def convert(
    slides: SlidesArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: <slide>.tiff per slide.")] = Path(
        "converted"),
    slides_csv: SlidesCsvOpt = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="Deflate tiles (exact pixels, larger files) "
                                           "instead of JPEG.")] = False,
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG quality.")] = 90,
    max_damaged: MaxDamagedOpt = 0.05,
    resume: Annotated[bool, typer.Option("--resume", help="Keep slides converted earlier with these settings.")]
    = False,
    shard: ShardOpt = None,
    devices: DevicesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert slides (CZI, OME-Zarr, OME-TIFF, DICOM, MRXS, ...) to pyramidal TIFFs with their mpp."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.cluster import resolve_shard
    from pathotune_cli.runs.convert import CONVERT, ConvertOptions
    from pathotune_cli.runs.per_slide.devices import run_command

    opts = ConvertOptions(slides=tuple(slides or ()), out=out, slides_csv=slides_csv, lossless=lossless,
                          quality=quality, max_damaged=max_damaged, resume=resume, shard=resolve_shard(shard))
    with ProgressDisplay() as progress:
        result = run_command(CONVERT, opts, device_workers(devices), progress)
    if json_out:
        emit_json(result.to_dict())
    else:
        table(f"converted into {result.out}", ["slide", "status", "size", "levels", "mpp", "seconds"],
              [(r.name, r.status + (f" ({r.resume})" if r.resume else ""),
                f"{r.column('width')} x {r.column('height')}" if r.status == "ok" else "",
                r.column("levels") or "", r.mpp if r.mpp is not None else "", r.seconds) for r in result.rows])
    if result.exit_code:
        raise typer.Exit(result.exit_code)

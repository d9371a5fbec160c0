"""Option types declared once, with units in the names and ranges in the types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout; logs go to stderr.")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field, e.g. --set train.lr=1e-3 (repeatable)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed for splits, sampling and initialisation.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto: bf16 autocast on GPUs and on CPUs with AMX/AVX512-BF16, else fp32.",
        case_sensitive=False,
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Images per batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, max=256, help="Worker processes for reading.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DataOpt = Annotated[
    Path,
    typer.Option("--data", help="An ImageFolder tree (one folder per class) or a CSV with path,label[,split]."),
]
PromptsArg = Annotated[Path, typer.Argument(help="A prompt file written by `pathotune tune`.")]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Backbone weight file or folder (overrides the weight map).")
]

"""Option types declared once, with units in the names and ranges in the types."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.errors import BadInput


def above_zero(value: float | None) -> float | None:
    """Option callback: a value that must be above 0 (a learning rate), refused in the one-line form."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is out of range (allowed: above 0)")
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout; logs go to stderr.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field, e.g. --set train.lr=1e-3 (repeatable)."),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto: bf16 autocast on GPUs and on CPUs with AMX/AVX512-BF16, else fp32.",
        case_sensitive=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
KernelsOpt = Annotated[
    str,
    typer.Option("--kernels", help="auto (measured once per machine), or pinned: plain, attention=fused,weights=bf16."),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", metavar="I/N", show_default=False,
                 help="Take every N-th slide from the I-th (slides sorted by path), e.g. 0/4. Default: the SLURM "
                      "array task (SLURM_ARRAY_TASK_ID of _COUNT), or the torchrun/srun rank, else every slide."),
]
DevicesOpt = Annotated[
    str | None,
    typer.Option("--devices", show_default=False,
                 help="One worker process per device, each a shard, in one progress bar: GPU indices (0,1), all, "
                      "or cpu,cpu for CPU worker processes."),
]
UncalibratedOpt = Annotated[
    bool,
    typer.Option("--uncalibrated", help="Report the raw softmax instead of the temperature-calibrated probabilities."),
]
AlphaOpt = Annotated[
    float | None,
    typer.Option("--alpha", show_default=False,
                 help="Add conformal prediction sets covering the true class with probability 1 - alpha "
                      "(a level the prompt file stores: 0.05, 0.1 or 0.2)."),
]


PROMPTS_SUFFIX = ".safetensors"
PromptsArg = Annotated[
    Path | None,
    typer.Argument(
        help="A prompt file written by `pathotune tune` (or --prompts; default: `pathotune config set prompts`).",
        show_default=False,
    ),
]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts", "-p",
        help="Prompt file written by `pathotune tune` (default: the lab's, `pathotune config set prompts FILE`).",
        show_default=False,
    ),
]


def device_workers(devices: str | None, device: str = "auto") -> list[str] | None:
    """``--devices`` as the list of worker devices (None: run in this process); with ``--device`` it is refused.

    Raises:
        typer.BadParameter: both ``--devices`` and ``--device`` were given.
        BadInput: an entry of ``--devices`` is not a device here (``runs.per_slide.devices.parse_devices``).
    """
    if devices is None:
        return None
    if device != "auto":
        raise typer.BadParameter("--devices starts one worker per device; leave out --device")
    from pathotune_cli.runs.per_slide.devices import parse_devices

    return parse_devices(devices)


def choose_prompts(option: Path | None, positionals: list[Path]) -> tuple[Path, list[Path]]:
    """The prompt file of a command, and its other positional arguments.

    In order: ``--prompts``; else the one positional argument that is a ``.safetensors`` file, wherever it
    stands (``predict PROMPTS SLIDE...`` and ``predict SLIDE... PROMPTS``; slides never have that suffix); else the
    lab default.

    Raises:
        BadInput: none of the three gives a prompt file, or two positional arguments are prompt files.
    """
    from pathotune_cli.config.lab import read_lab_defaults

    if option is not None:
        return option, list(positionals)
    found = [p for p in positionals if p.suffix.lower() == PROMPTS_SUFFIX]
    if len(found) > 1:
        raise BadInput(f"two prompt files among the inputs ({found[0]} and {found[1]})",
                       "predict one model per run, each into its own --out folder")
    if found:
        return found[0], [p for p in positionals if p != found[0]]
    lab = read_lab_defaults().prompts
    if lab:
        return Path(lab), list(positionals)
    raise BadInput(
        "no prompt file given",
        "pass --prompts FILE (a prompts.safetensors from `pathotune tune`), or set a lab default once with "
        "`pathotune config set prompts FILE`",
    )
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Backbone weight file or folder (overrides the weight map).")
]


# Slide options shared by `tile` and `predict`, so both cut and read slides the same way.
class TissueChoice(str, Enum):
    """Tissue detection modes."""

    otsu = "otsu"
    none = "none"


SlidesCsvOpt = Annotated[
    Path | None,
    typer.Option("--slides-csv", help="CSV with a slide column and an optional mpp column (slide,mpp)."),
]
MinTissueOpt = Annotated[
    float, typer.Option("--min-tissue", min=0.0, max=1.0, help="Tissue fraction a tile needs to be kept.")
]
TissueOpt = Annotated[
    TissueChoice,
    typer.Option("--tissue", case_sensitive=False, help="otsu: detect tissue; none: every tile."),
]
MaxDamagedOpt = Annotated[
    float,
    typer.Option("--max-damaged", min=0.0, max=1.0, help="Share of a slide's tiles that may fail to decode (read "
                 "from a coarser level, or left out) before the slide fails."),
]
RoiOpt = Annotated[
    Path | None,
    typer.Option("--roi", help="Regions of interest from QuPath (File > Export objects as GeoJSON): one slide's "
                 ".geojson, a folder of <slide>.geojson, or a CSV slide,labels; only tiles inside are read."),
]
RoiClassOpt = Annotated[
    str | None, typer.Option("--roi-class", help="With --roi: only the regions of this class (e.g. Tumor).")
]
CoordsOpt = Annotated[
    Path | None,
    typer.Option("--coords", help="Reuse tile coordinates: a coords .h5 (from tile, CLAM or TRIDENT) or a folder of "
                 "<slide>.h5; refused when their tiles are of another physical size than the model's."),
]
TissueGeojsonOpt = Annotated[
    Path | None,
    typer.Option("--tissue-geojson", help="QuPath GeoJSON of tissue (or a folder of <slide>.geojson) to use."),
]
DefaultMppOpt = Annotated[
    float | None,
    typer.Option("--default-mpp", min=0.02, max=40.0, help="mpp for slides whose metadata and CSV give none."),
]
SweepOpt = Annotated[
    list[str] | None,
    typer.Option("--sweep", metavar="KEY=V1,V2", help="Train every combination (repeatable), keep the best by the "
                 "validation metric (train.monitor); writes RUN/sweep.csv."),
]

ReportOpt = Annotated[
    bool,
    typer.Option("--report/--no-report",
                 help="Also write report.html: one offline page of the results for a pathologist (about a second)."),
]

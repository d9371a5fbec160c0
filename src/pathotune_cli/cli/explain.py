"""``pathotune explain``: per tile, a PNG with its attribution map beside the top classes and their probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import (
    AlphaOpt,
    DeviceOpt,
    JsonOpt,
    PromptsOpt,
    UncalibratedOpt,
    WeightsOpt,
    choose_prompts,
)
from pathotune_cli.cli.render import emit_json, info, table, user_errors

ImagesArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Tile images or folders of them (a prompt file first: PROMPTS IMAGE...).", show_default=False),
]


@user_errors
def explain(
    images: ImagesArg = None,
    prompts: PromptsOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and explanations.csv.")] = Path(
        "explanations"
    ),
    top: Annotated[int, typer.Option("--top", min=1, max=50, help="Classes listed beside the map.")] = 3,
    alpha: AlphaOpt = None,
    uncalibrated: UncalibratedOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=512, help="Tiles per batch.")] = 8,
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain tiles: gradient x input attribution over each tile, with the top classes' probabilities."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.runs.explain import ExplainOptions, explain_run

    prompts, rest = choose_prompts(prompts, list(images or []))
    opts = ExplainOptions(prompts=prompts, images=tuple(rest), out=out, top=top, alpha=alpha,
                          uncalibrated=uncalibrated, batch_size=batch_size, device=device, weights=weights)
    with ProgressDisplay() as progress:
        result = explain_run(opts, report=progress)
    if json_out:
        emit_json(result.to_dict())
        return
    table(f"explanations in {result.out} ({result.probabilities})", ["tile", "class", "probability", "set", "OOD"],
          [(r.image, r.class_name, f"{r.probability:.3f}", r.prediction_set or "",
            "" if r.ood is None else ("flagged" if r.ood else "no")) for r in result.rows])
    info(f"{len(result.rows)} PNGs and explanations.csv in {result.out}")

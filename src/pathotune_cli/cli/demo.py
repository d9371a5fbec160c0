"""``pathotune demo``: the whole flow on generated data with a tiny backbone; needs no network and no weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, info, key_values, user_errors


@user_errors
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where the demo writes everything [default: demo-out].", show_default=False),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Tuning epochs.")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the generated data and the run.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole flow (tune, eval, tile, predict, export) on generated data with a tiny random backbone, offline."""
    from pathotune_cli.cli.progress import ProgressDisplay
    from pathotune_cli.config.lab import output_folder
    from pathotune_cli.runs.demo import demo_run

    out = output_folder("demo", out)
    if out.exists() and any(out.iterdir()):
        info(f"reusing {out}: finished steps are kept; delete it for a fresh demo")
    with ProgressDisplay() as progress:
        result = demo_run(out, epochs=epochs, seed=seed, report=progress)
    if json_out:
        emit_json(result.to_dict())
        return
    metrics: dict[str, object] = {f"test tiles {k}": v for k, v in result.eval.metrics.items() if v is not None}
    metrics.update({"demo slide: tiles in their region's class":
                    f"{result.slide.region_agreement:.1%} of {result.slide.tiles}"})
    if result.slide_level is not None:
        metrics.update({
            "slide-level demo: test slides AUROC": result.slide_level.test_auroc,
            "slide-level demo: top-8 attended tiles in the tumour": f"{result.slide_level.top8_in_tumour:.0%}",
        })
    metrics.update({f"{fmt} export: max |p - p_torch|": value if isinstance(value, str) else f"{value:.1e}"
                    for fmt, value in result.export.items()})
    key_values("demo results", metrics)
    key_values(f"demo artifacts ({result.seconds} s)", result.artifacts)

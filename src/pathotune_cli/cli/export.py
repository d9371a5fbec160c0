"""``pathotune export``: a prompt file to a self-contained ONNX or TorchScript model, checked, with a card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt, PromptsArg, PromptsOpt, WeightsOpt, choose_prompts
from pathotune_cli.cli.progress import ProgressDisplay
from pathotune_cli.cli.render import emit_json, key_values, user_errors


@user_errors
def export(
    prompts: PromptsArg = None,
    prompts_opt: PromptsOpt = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="onnx or torchscript.", case_sensitive=False)
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Export file (default: model.onnx or model.ts beside the prompts)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check", help="Compare the export with PyTorch on the same tiles (fails above 1e-4)."
        ),
    ] = True,
    check_data: Annotated[
        Path | None, typer.Option("--check-data", help="A folder of real tiles to add to the check.")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(
            "--metrics",
            help="An eval metrics.json for the model card (default: eval/metrics.json beside the prompts).",
        ),
    ] = None,
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a prompt file and its backbone to ONNX or TorchScript: uint8 tiles in, probabilities out."""
    from pathotune_cli.runs.export import ExportOptions, export_run

    prompts, _ = choose_prompts(prompts_opt, [prompts] if prompts else [])
    opts = ExportOptions(prompts=prompts, format=format_, out=out, check=check, check_data=check_data,
                         weights=weights, metrics=metrics)
    with ProgressDisplay() as progress:
        result = export_run(opts, report=progress)
    if json_out:
        emit_json(result.to_dict())
        return
    inp, checked = result.input, result.check
    key_values(f"exported {result.method} on {result.backbone} for {result.task} to {result.format}", {
        "file": f"{result.export} ({result.bytes / 1024**2:.1f} MiB)",
        "input": f"{inp['name']}: {inp['dtype']} {inp['channels']} {tuple(inp['shape'])} {inp['layout']}, "
                 f"{inp['range'][0]}-{inp['range'][1]}",
        "output": f"{result.output['name']}: softmax over {len(result.classes)} classes",
        "check": "skipped (--no-check)" if checked is None else (
            f"max |diff| {checked['max_abs_diff']:.2e} on {checked['tiles']} tiles ({checked['real_tiles']} real), "
            f"allowed {checked['tolerance']:.0e}"
        ),
        "model card": f"{result.card_json}, {result.card_md.name}",
        "seconds": f"{result.seconds:.1f}",
    })

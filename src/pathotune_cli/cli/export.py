"""``pathotune export``: a prompt file to a self-contained ONNX or TorchScript model, checked, with a card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt, PromptsArg, PromptsOpt, WeightsOpt, choose_prompts, path_str
from pathotune_cli.cli.render import emit_json, info, key_values, user_errors, warn


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
    opts = ExportOptions(
        prompts=str(prompts),
        format=format_,
        out=path_str(out),
        check=check,
        check_data=path_str(check_data),
        weights=path_str(weights),
        metrics=path_str(metrics),
    )
    doc = export_run(opts, report=lambda kind, d: (warn if kind == "warning" else info)(d["message"]))
    if json_out:
        emit_json(doc)
        return
    inp, check_doc = doc["input"], doc["check"]
    key_values(
        f"exported {doc['method']} on {doc['backbone']} for {doc['task']} to {doc['format']}",
        {
            "file": f"{doc['export']} ({doc['bytes'] / 1024**2:.1f} MiB)",
            "input": f"{inp['name']}: {inp['dtype']} {inp['channels']} {tuple(inp['shape'])}"
            f" {inp['layout']}, "
            f"{inp['range'][0]}-{inp['range'][1]}",
            "output": f"{doc['output']['name']}: softmax over {len(doc['classes'])} classes",
            "check": "skipped (--no-check)"
            if check_doc is None
            else (
                f"max |diff| {check_doc['max_abs_diff']:.2e} on {check_doc['tiles']} tiles "
                f"({check_doc['real_tiles']} real), allowed {check_doc['tolerance']:.0e}"
            ),
            "model card": f"{doc['card_json']}, {Path(doc['card_md']).name}",
            "seconds": f"{doc['seconds']:.1f}",
        },
    )

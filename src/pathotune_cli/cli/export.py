"""``pathotune export``: a prompt file to a self-contained ONNX, TorchScript or pt2 model, or a WSInfer model folder,
checked, with a card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pathotune_cli.cli.options import JsonOpt, PromptsArg, PromptsOpt, WeightsOpt, choose_prompts
from pathotune_cli.cli.progress import ProgressDisplay
from pathotune_cli.cli.render import emit_json, key_values, user_errors


@user_errors
def export(
    prompts: PromptsArg = None,
    prompts_opt: PromptsOpt = None,
    format_: Annotated[
        str,
        typer.Option("--format", "-f", help="onnx, torchscript, pt2 (torch.export) or wsinfer (a WSInfer/QuPath "
                     "model folder).", case_sensitive=False),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Export file, or folder for wsinfer (default: model.onnx, model.ts, "
                     "model.pt2 or wsinfer-model/ beside the prompts)."),
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
    check_wsinfer: Annotated[
        Path | None,
        typer.Option("--check-wsinfer", help="With --format wsinfer: run WSInfer on this slide and compare it with "
                     "`pathotune predict` tile by tile (fails below 99% top-class agreement or above 0.02 |dp|)."),
    ] = None,
    wsinfer: Annotated[
        Path | None,
        typer.Option("--wsinfer", help="The `wsinfer` executable for --check-wsinfer (default: the one on PATH)."),
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
    """Export a prompt file and its backbone: RGB tiles in (uint8 0-255 or float32 0-1), probabilities out."""
    from pathotune_cli.runs.export import ExportOptions, export_run

    prompts, _ = choose_prompts(prompts_opt, [prompts] if prompts else [])
    opts = ExportOptions(prompts=prompts, format=format_, out=out, check=check, check_data=check_data,
                         weights=weights, metrics=metrics, check_wsinfer=check_wsinfer, wsinfer=wsinfer)
    with ProgressDisplay() as progress:
        result = export_run(opts, report=progress)
    if json_out:
        emit_json(result.to_dict())
    else:
        _render(result)


def _render(result: Any) -> None:
    inp, checked = result.input, result.check
    rows = {
        "file": f"{result.export} ({result.bytes / 1024**2:.1f} MiB)",
        "input": f"{' + '.join(inp['inputs'])}: {_conventions(inp)}, {tuple(inp['shape'])} {inp['layout']}",
        "output": f"{result.output['name']}: {'logits' if result.output['name'] == 'logits' else 'softmax'} over "
                  f"{len(result.classes)} classes",
        "check": "skipped (--no-check)" if checked is None else (
            f"max |diff| {checked['max_abs_diff']:.2e} on {checked['tiles']} tiles ({checked['real_tiles']} real), "
            f"uint8 and float32, allowed {checked['tolerance']:.0e}; refuses {len(checked['refuses'])} wrong inputs"
        ),
    }
    if result.config is not None:
        rows["config"] = str(result.config)
    if result.wsinfer_check is not None:
        ws = result.wsinfer_check
        rows["WSInfer"] = (f"top class agrees on {ws['top_class_agreement']:.1%} of {ws['shared_tiles']} shared "
                           f"tiles, max |dp| {ws['max_abs_dp']:.2e}")
    rows.update({"model card": f"{result.card_json}, {result.card_md.name}", "seconds": f"{result.seconds:.1f}"})
    key_values(f"exported {result.method} on {result.backbone} for {result.task} to {result.format}", rows)


def _conventions(inp: dict[str, Any]) -> str:
    return " or ".join(f"{c['dtype']} {c['range'][0]}-{c['range'][1]}" for c in inp["conventions"])

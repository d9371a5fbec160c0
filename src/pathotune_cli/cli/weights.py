"""``pathotune weights list|add``: where each backbone's weights are, and recording a downloaded file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, info, key_values, out, table, user_errors

if TYPE_CHECKING:
    from pathotune_cli.runs.weights import WeightStatus

app = typer.Typer(help="Where backbone weights are found, and recording local weight files.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_(json_out: JsonOpt = False) -> None:
    """Every backbone preset: where its weights were found (or missing), licence, gated, and how to fetch them."""
    from pathotune_cli.backbones.weights import hf_cache_dir, weight_map_path
    from pathotune_cli.runs.weights import list_weights

    rows = list_weights()
    if json_out:
        backbones = [r.to_dict() for r in rows]
        emit_json({"weight_map": str(weight_map_path()), "hf_cache": str(hf_cache_dir()), "backbones": backbones})
        return
    table(
        "backbone weights",
        ["preset", "weights", "gated", "licence"],
        [(r.preset, _where(r), "yes" if r.gated else "no", r.licence) for r in rows],
    )
    for r in rows:  # full paths and commands, unwrapped, so they can be copied
        if r.status == "found":
            out.print(f"{r.preset}: {r.path}", soft_wrap=True)
        elif r.status in ("missing", "broken"):
            out.print(f"{r.preset}: {r.fetch}", soft_wrap=True)
    info(f"weight map: {weight_map_path()}; Hugging Face cache: {hf_cache_dir()}")


@app.command("add")
@user_errors
def add(
    preset: Annotated[str, typer.Argument(help="Backbone preset name (see `pathotune weights list`).")],
    file: Annotated[Path, typer.Argument(help="The downloaded weight file (or the folder holding it).")],
    json_out: JsonOpt = False,
) -> None:
    """Check a weight file's keys, shapes and sha256 against a backbone preset, then record it in the weight map."""
    from pathotune_cli.runs.weights import add_weights

    info(f"checking {file} against {preset} (keys, shapes, sha256) ...")
    result = add_weights(preset, file)
    if json_out:
        emit_json(result.to_dict())
        return
    key_values(
        f"recorded {result.preset}",
        {
            "file": result.path,
            "tensors": f"{result.tensors} match the architecture",
            "sha256": f"{result.sha256} ({result.sha256_check})",
            "weight map": result.weight_map + (f" (replaced {result.replaced})" if result.replaced else ""),
        },
    )


def _where(row: WeightStatus) -> str:
    if row.status == "found":
        return f"found ({row.found_in})"
    if row.status == "random":
        return "random (tests, demo)"
    return row.status

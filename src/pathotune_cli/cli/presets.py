"""``pathotune presets list|show``: the shipped task and backbone presets."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
import yaml

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, table, user_errors

app = typer.Typer(help="List and show task and backbone presets.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_(json_out: JsonOpt = False) -> None:
    """List the shipped presets: tasks (what to learn) and backbones (which frozen model)."""
    from pathotune_cli.config import list_presets, load_backbone_preset, load_task_preset

    tasks = [load_task_preset(n) for n in list_presets("tasks")]
    backbones = [load_backbone_preset(n) for n in list_presets("backbones")]
    if json_out:
        emit_json({"tasks": [t.model_dump(mode="json") for t in tasks],
                   "backbones": [b.model_dump(mode="json") for b in backbones]})
        return
    table("tasks", ["name", "classes", "tile", "description"],
          [(t.name, len(t.classes), f"{t.tile.size} px @ {t.tile.mpp} um/px", t.description) for t in tasks])
    table("backbones", ["name", "family", "width", "input", "weights", "licence"],
          [(b.name, b.family, b.width, b.input_size, b.weights, b.licence) for b in backbones])


@app.command("show")
@user_errors
def show(
    name: Annotated[str, typer.Argument(help="A task or backbone preset name, or a YAML path.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one preset, fully resolved (every default filled in)."""
    from pathotune_cli.config import find_preset, list_presets, load_backbone_preset, load_task_preset
    from pathotune_cli.config.loader import read_yaml

    if name in list_presets("tasks"):
        preset = load_task_preset(name)
    elif name in list_presets("backbones"):
        preset = load_backbone_preset(name)
    elif "classes" in read_yaml(find_preset("tasks", name)):  # a user's YAML: tasks have classes
        preset = load_task_preset(name)
    else:
        preset = load_backbone_preset(name)
    data = preset.model_dump(mode="json")
    if json_out:
        emit_json(data)
        return
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))

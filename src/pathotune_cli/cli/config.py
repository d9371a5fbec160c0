"""``pathotune config set|get|unset|list``: lab defaults for the backbone, the prompt file and the output root."""

from __future__ import annotations

from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, info, out, table, user_errors

app = typer.Typer(
    help="Lab defaults, set once: backbone, prompts, out (`pathotune config list` shows them).",
    no_args_is_help=True,
)
KeyArg = Annotated[str, typer.Argument(help="backbone, prompts or out.", show_default=False)]


@app.command("set")
@user_errors
def set_(
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="A backbone preset, a prompt file, or a folder.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Set a lab default after checking that it works (a known backbone, a readable prompt file, a folder)."""
    from pathotune_cli.runs.lab import set_default

    result = set_default(key, value)
    if json_out:
        emit_json(result.to_dict())
        return
    was = f" (was {result.previous})" if result.previous and result.previous != result.value else ""
    info(f"{result.key} = {result.value}{was}; in {result.file}")


@app.command("get")
@user_errors
def get(key: KeyArg, json_out: JsonOpt = False) -> None:
    """Print one lab default; exit 1 when it is not set."""
    from pathotune_cli.runs.lab import get_default

    value = get_default(key)
    if json_out:
        emit_json({"key": key, "value": value})
    elif value is not None:
        out.print(value, soft_wrap=True)
    if value is None:
        if not json_out:
            info(f"{key} is not set; `pathotune config set {key} VALUE` sets it")
        raise typer.Exit(1)


@app.command("unset")
@user_errors
def unset(key: KeyArg, json_out: JsonOpt = False) -> None:
    """Remove a lab default."""
    from pathotune_cli.runs.lab import unset_default

    result = unset_default(key)
    if json_out:
        emit_json(result.to_dict())
    else:
        info(f"{result.key} unset" + (f" (was {result.previous})" if result.previous else " (was not set)"))


@app.command("list")
@user_errors
def list_(json_out: JsonOpt = False) -> None:
    """Every lab default, its value and what it does."""
    from pathotune_cli.runs.lab import list_defaults

    doc = list_defaults()
    if json_out:
        emit_json(doc.to_dict())
        return
    rows = [(d.key, "(not set)" if d.value is None else d.value, d.meaning) for d in doc.defaults]
    table(f"lab defaults ({doc.file})", ["key", "value", "meaning"], rows)

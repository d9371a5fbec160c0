"""The ``pathotune`` entry point: joins the command modules, each of which imports torch only when run."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from pathotune_cli import __version__
from pathotune_cli.cli.render import CliState

app = typer.Typer(
    name="pathotune",
    help="Prompt-tune frozen pathology foundation models on your tiles, then map them over whole slides.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold slide paths and patient identifiers
    add_completion=False,
    rich_markup_mode="rich",
)

# (command name, module under pathotune_cli.cli, function). Each module imports only typer at import time.
COMMANDS: list[tuple[str, str, str]] = [
    ("tune", "tune", "tune"),
    ("eval", "evaluate", "evaluate"),
    ("predict", "predict", "predict"),
    ("explain", "explain", "explain"),
    ("tile", "tile", "tile"),
    ("features", "features", "features"),
    ("export", "export", "export"),
    ("inspect", "inspect", "inspect"),
    ("doctor", "doctor", "doctor"),
    ("demo", "demo", "demo"),
]
# (group name, module): modules that define their own ``app = typer.Typer()`` with subcommands.
GROUPS: list[tuple[str, str]] = [("presets", "presets"), ("weights", "weights"), ("config", "config")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pathotune {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Prompt-tune frozen pathology foundation models on your tiles, then map them over whole slides."""
    ctx.obj = CliState(debug=debug)  # read back by `render.user_errors` through the click context


def _register() -> None:
    for name, module, attr in COMMANDS:
        app.command(name)(getattr(importlib.import_module(f"pathotune_cli.cli.{module}"), attr))
    for name, module in GROUPS:
        app.add_typer(importlib.import_module(f"pathotune_cli.cli.{module}").app, name=name)


_register()


def main() -> None:
    """Console-script entry point."""
    app()

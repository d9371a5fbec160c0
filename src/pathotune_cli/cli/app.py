"""The ``pathotune`` entry point: joins the command modules, each of which imports torch only when run."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer bundles its own click
from typer.core import TyperGroup

from pathotune_cli import __version__
from pathotune_cli.cli.render import CliState, error_line, usage_line


class OneLineErrors(TyperGroup):
    """The root command: a usage error (an unknown option or command, a value out of range) is one line on
    stderr and exit code 2, like every other error, instead of click's usage box."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command; with ``standalone_mode`` (the console script, ``CliRunner``) exit with its code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # the help is already printed
            sys.exit(exc.exit_code)
        except ClickException as exc:
            error_line(usage_line(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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
    ("convert", "convert", "convert"),
    ("merge", "merge", "merge"),
    ("export", "export", "export"),
    ("report", "report", "report"),
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
    """Console-script entry point (messages say ``pathotune`` however it was started).

    SIGTERM becomes ``errors.Terminated`` in the main thread, so a job stopped at its time limit releases its
    slide locks and removes its temporaries like Ctrl-C does, instead of dying mid-write.
    """
    import signal

    from pathotune_cli.errors import raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    app(prog_name="pathotune")

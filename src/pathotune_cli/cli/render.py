"""Where output goes: results on stdout, everything else (progress, logs, errors) on stderr.

``pathotune ... --json | jq`` always parses because only the final JSON document reaches stdout.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pathotune_cli.errors import PathotuneError
from pathotune_cli.files import dumps

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CliState:
    """What the root options set for every command: ``pathotune --debug COMMAND``."""

    debug: bool = False


def debug_enabled() -> bool:
    """Whether ``pathotune --debug`` asked for tracebacks instead of one-line errors (read from the running
    command's click context, where the root callback left it; False outside a command)."""
    from typer._click.globals import get_current_context  # typer bundles its own click

    ctx = get_current_context(silent=True)
    state = ctx.find_root().obj if ctx is not None else None
    return bool(getattr(state, "debug", False))


def user_errors(fn: F) -> F:
    """Turn a ``PathotuneError`` into one line on stderr and its exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PathotuneError as exc:
            if debug_enabled():
                raise
            error_line(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted; finished outputs are kept, rerun with --resume where the command has it")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as exc:  # the last line of defence before a traceback
            if debug_enabled():
                raise
            error_line(f"internal error: {type(exc).__name__}: {exc}; rerun with --debug for the traceback")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def error_line(message: str) -> None:
    """Print one error line on stderr."""
    err.print(Text("error: ", style="bold red") + Text(message))


def warn(message: str) -> None:
    """Print one warning line on stderr."""
    err.print(Text("warning: ", style="yellow") + Text(message))


def info(message: str) -> None:
    """Print one progress or log line on stderr."""
    err.print(Text(message))


def emit_json(document: Any) -> None:
    """Write the one JSON document of a ``--json`` run to stdout."""
    sys.stdout.write(dumps(document) + "\n")
    sys.stdout.flush()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a summary table on stdout."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*[_cell(v) for v in row])
    out.print(t)


def key_values(title: str, items: Mapping[str, Any]) -> None:
    """Print a two-column table of named values on stdout."""
    table(title, ["", "value"], [(k, v) for k, v in items.items()])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

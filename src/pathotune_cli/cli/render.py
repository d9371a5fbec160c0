"""Where output goes: results on stdout, everything else (progress, logs, errors) on stderr.

``pathotune ... --json | jq`` always parses because only the final JSON document reaches stdout.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pathotune_cli.errors import PathotuneError, Terminated, os_error, was_shown_elsewhere
from pathotune_cli.files import dumps

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_errors = Console(stderr=True, highlight=False, soft_wrap=True)
"""Error lines of a quiet rank (``other_rank``), which keep printing while ``err`` is quiet."""

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
    """Turn a ``PathotuneError`` or an ``OSError`` into one line on stderr and its exit code; never a traceback.

    An ``OSError`` names its path and the fix (``errors.os_error``): exit 2 for the user's input or location (a
    file in the way, a read-only disk, no permission), exit 1 for a run that failed midway (a full disk). What is
    left, "internal error", is a bug.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            found = _error_of(exc)
            if found is None or (debug_enabled() and not isinstance(exc, KeyboardInterrupt)):
                raise
            line, code = found
            if not was_shown_elsewhere(exc):  # rank 0 of a torchrun/srun run may have printed it already
                error_line(line)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _error_of(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an error (None: let it through, e.g. ``typer.Exit``)."""
    if isinstance(exc, PathotuneError):
        return exc.one_line(), exc.exit_code
    if isinstance(exc, OSError):  # a file in the way, a read-only disk, no permission, a full disk
        mapped = os_error(exc)
        return mapped.one_line(), mapped.exit_code
    if isinstance(exc, Terminated):
        return ("stopped by SIGTERM (a job's time limit?); finished outputs are kept, rerun with --resume where the "
                "command has it"), Terminated.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; finished outputs are kept, rerun with --resume where the command has it", 130
    if isinstance(exc, (typer.Exit, typer.Abort, typer.BadParameter)) or not isinstance(exc, Exception):
        return None
    return f"internal error: {type(exc).__name__}: {exc}; rerun with --debug for the traceback", 1  # a bug


@contextlib.contextmanager
def other_rank(rank: int) -> Iterator[None]:
    """Rank ``rank`` (not 0) of a torchrun/srun run: no results, progress or warnings (rank 0 prints those), but
    its errors still print, one line each, as ``error: rank N: ...`` (an error before the ranks meet is one rank 0
    cannot tell), except those rank 0 has printed already. Results and warnings print again after the block."""
    quiet = out.quiet, err.quiet
    out.quiet = err.quiet = True
    try:
        yield
    except BaseException as exc:
        found = _error_of(exc)
        if found is None or debug_enabled():
            raise
        line, code = found
        label = f"rank {rank}: "
        if not was_shown_elsewhere(exc) and not isinstance(exc, KeyboardInterrupt):  # Ctrl-C reaches every rank
            _errors.print(Text("error: ", style="bold red") + Text(line if line.startswith(label) else label + line))
        raise typer.Exit(code) from None
    finally:
        out.quiet, err.quiet = quiet


def usage_line(exc: Exception) -> str:
    """One line for a usage error of the command line (click's ``UsageError`` family): the option, the value
    and what is allowed, then where to look; never click's usage box."""
    ctx = getattr(exc, "ctx", None)
    see = f"see `{ctx.command_path} --help`" if ctx is not None else "see `pathotune --help`"
    param = getattr(exc, "param", None)
    message = " ".join(str(getattr(exc, "message", exc)).split()).rstrip(".")
    unknown = re.search(r"No such command '([^']+)'", message)
    if unknown and ctx is not None:
        names = ctx.command.list_commands(ctx) if hasattr(ctx.command, "list_commands") else []
        close = difflib.get_close_matches(unknown.group(1), names, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return f"unknown command '{unknown.group(1)}'{hint}; {see} for the commands"
    if param is None or not message:  # a missing argument's text is in format_message
        message = message or " ".join(exc.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
        return f"{message[:1].lower()}{message[1:]}; {see}"
    name = "/".join(getattr(param, "opts", None) or [str(getattr(param, "name", "value")).upper()])
    cause = exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    if not errors:
        return f"{name} {message}; {see}"
    value, kind = errors[0].get("input"), errors[0].get("type", "")
    allowed = _allowed(param)
    if kind.startswith(("greater_than", "less_than")) and allowed:
        return f"{name} {value} is out of range ({allowed}); {see}"
    if kind in ("int_parsing", "int_from_float"):
        return f"{name} {value!r} is not a whole number{f' ({allowed})' if allowed else ''}; {see}"
    if kind == "float_parsing":
        return f"{name} {value!r} is not a number{f' ({allowed})' if allowed else ''}; {see}"
    detail = str(errors[0].get("msg", message)).removeprefix("Value error, ").rstrip(".")
    if detail.startswith(repr(value)):
        return f"{name} {detail}; {see}"
    return f"{name} {value!r}: {detail[:1].lower()}{detail[1:]}; {see}"


def _allowed(param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"allowed: {low} to {high}"
    if low is not None:
        return f"allowed: {low} or more"
    if high is not None:
        return f"allowed: up to {high}"
    return ""


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

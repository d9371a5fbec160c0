"""One error type for everything a user should read: the problem, the fix, and the exit code.

Raised anywhere below ``cli/`` and caught once in ``cli/app.py``, which prints one line and exits.
"""

from __future__ import annotations

import errno
import os
import re


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, ``kill``, a container stopping), raised in the main thread like Ctrl-C, so
    every ``finally`` runs: locks are released, temporaries removed and the run folder marked failed."""

    exit_code = 143

    def __str__(self) -> str:
        return "stopped by SIGTERM"


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler (``cli.app.main`` installs it)."""
    raise Terminated()


class PathotuneError(Exception):
    """A failed run (exit code 1): the input was fine but the work could not be done."""

    exit_code = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # keep the fix when errors cross process boundaries
        return (type(self), (self.problem, self.fix))

    def one_line(self) -> str:
        """The message a user sees: the problem, then the fix, on one line (a line break inside a name or a
        value, which a user's file can hold, is shown as ``\\n``)."""
        text = f"{self.problem}; {self.fix}" if self.fix else self.problem
        return text.replace("\r", "\\r").replace("\n", "\\n")


class BadInput(PathotuneError):
    """Bad usage or bad input (exit code 2): a missing file, a typo, a file from another backbone."""

    exit_code = 2


class MissingWeights(BadInput):
    """A backbone's weights do not resolve on this machine; the fix names the command that fetches them."""


class MissingDependency(BadInput):
    """An optional package is not installed; the fix names the ``pip install`` that adds it."""


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors of a run that failed midway (exit 1): the disk or the quota filled up while it wrote."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (a library's error can run to many lines), without a C++ source
    location in front (gloo's ``[.../pair.cc:545] Read error ...``), ``limit`` characters at most."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return re.sub(r"^\[[^\]]*\.(cpp|cc|h):\d+\]\s*", "", lines[0])[:limit]


def describe(exc: BaseException, where: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """An error's exit code and one line: ours as they are, an ``OSError`` naming its path (``where`` when it
    carries none) and the fix, an interruption, else ``internal error: ...`` (a bug)."""
    if isinstance(exc, PathotuneError):
        return exc.exit_code, exc.one_line()
    if isinstance(exc, OSError):
        mapped = os_error(exc, where)
        return mapped.exit_code, mapped.one_line()
    if isinstance(exc, Terminated):
        return Terminated.exit_code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    return 1, f"internal error: {type(exc).__name__}: {first_line(exc)}"


def os_error(exc: OSError, where: str | os.PathLike[str] | None = None, option: str = "") -> PathotuneError:
    """One line, naming the path and the fix, for an ``OSError`` (exit 2 for the user's input or location, exit 1
    for a run that failed midway: a full disk or quota).

    Args:
        exc: The error. Its ``filename`` names the path; ``where`` stands in for errors that carry none (a write
            on a full disk says only ``No space left on device``).
        where: The file or folder being written or read, when ``exc`` does not say.
        option: The option that named the location (``--out``), for the fix.
    """
    path = exc.filename if exc.filename is not None else where
    shown = os.fspath(path) if path is not None else "a file"
    choose = f"choose another {option}" if option else "choose another location"
    code = exc.errno
    if code in _FULL:
        what = "no space left" if code == errno.ENOSPC else f"{exc.strerror or 'no room'} (errno {code})"
        return PathotuneError(f"{what} on the device holding {shown}",
                              f"free some space or {choose}, then rerun (with --resume where the command has it)")
    if code in (errno.EACCES, errno.EPERM):
        problem, fix = f"{shown}: permission denied", f"{choose} you may write to, or ask for access"
    elif code == errno.EROFS:
        problem, fix = f"{shown} is on a read-only file system", f"{choose} on a writable disk"
    elif code == errno.EEXIST:
        problem, fix = f"{shown} exists and is not a folder", f"{choose}, or move the file away"
    elif code == errno.ENOTDIR:
        problem, fix = f"{shown}: a part of this path is a file, not a folder", f"{choose}, or move the file away"
    elif code == errno.EISDIR:
        problem, fix = f"{shown} is a folder, not a file", "pass a file name"
    elif code == errno.ENOENT:
        problem, fix = f"{shown} does not exist", "check the path"
    else:
        return PathotuneError(f"{shown}: {exc.strerror or type(exc).__name__}", f"check the path, or {choose}")
    return BadInput(problem, fix)


_SHOWN = "_pathotune_shown_elsewhere"


def shown_elsewhere(exc: BaseException, shown: bool = True) -> BaseException:
    """Mark ``exc`` as already printed by another process (rank 0 of a torchrun/srun run said it): the command
    line then exits with its code without printing it again. Returns ``exc``."""
    if shown:
        setattr(exc, _SHOWN, True)
    return exc


def was_shown_elsewhere(exc: BaseException) -> bool:
    """Whether another process already printed ``exc`` (``shown_elsewhere``)."""
    return bool(getattr(exc, _SHOWN, False))

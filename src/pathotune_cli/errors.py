"""One error type for everything a user should read: the problem, the fix, and the exit code.

Raised anywhere below ``cli/`` and caught once in ``cli/app.py``, which prints one line and exits.
"""

from __future__ import annotations


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
        """The message a user sees: the problem, then the fix."""
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class BadInput(PathotuneError):
    """Bad usage or bad input (exit code 2): a missing file, a typo, a file from another backbone."""

    exit_code = 2


class MissingWeights(BadInput):
    """A backbone's weights do not resolve on this machine; the fix names the command that fetches them."""


class MissingDependency(BadInput):
    """An optional package is not installed; the fix names the ``pip install`` that adds it."""

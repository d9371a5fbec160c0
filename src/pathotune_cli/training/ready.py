"""The ranks' first meeting: every rank says whether its checks passed, and one refusal stops them all.

A rank that fails its checks before the run (the backbone's weights missing on its node, ``--out`` not writable
there) still joins the rendezvous instead of ending alone: alone, under srun the others would wait for it until
the rendezvous timed out, and under torchrun its end would stop rank 0 mid-wait with no line at all. Here every
rank stops at once and rank 0 prints the refusal (``rank N refused to start: ...``).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError, os_error, shown_elsewhere
from pathotune_cli.errors import first_line as whole_first_line

PREFIX = "pathotune/"
"""Keys of ours in the rendezvous store."""


def all_ready(store: Any, rank: int, size: int, refused: BaseException | None,
              on_failure: Callable[[str], None] | None, linger: bool = False) -> None:
    """Every rank says whether its checks passed before any starts; a refusal stops every rank.

    Rank 0 prints the refusal (its own, else the first other's); a rank whose error it printed stays quiet and
    (``linger``, under torchrun, whose agent hosts the store) waits up to 5 s for rank 0 to end first: torchrun
    stops every rank once one has ended, and rank 0 must not be stopped before it has cleaned up and printed.

    Raises:
        PathotuneError: The refusing rank's own error on it; on the others, the first refusal, naming its rank.
    """
    store.set(f"{PREFIX}ready/{rank}", "ok" if refused is None else "|".join(map(str, describe_error(refused))))
    store.wait([f"{PREFIX}ready/{r}" for r in range(size)])
    said = {r: store.get(f"{PREFIX}ready/{r}").decode() for r in range(size)}
    refusals = {r: value.partition("|") for r, value in said.items() if value != "ok"}
    if not refusals:
        return
    first = min(refusals)  # rank 0's own refusal where it has one
    code, _, line = refusals[first]
    others = [r for r in refusals if refusals[r][2] != line]
    error = refused if refused is not None else (BadInput if code == "2" else PathotuneError)(
        f"rank {first} refused to start: {line}" + (f" (and {_ranks(others)}: see their lines)" if others else ""))
    if on_failure is not None:
        with contextlib.suppress(Exception):
            on_failure(describe_error(error)[1])
    if rank == 0:
        with contextlib.suppress(Exception):
            store.set(f"{PREFIX}refusal-told", "1")
        raise error
    told = _wait(store, f"{PREFIX}refusal-told", 10.0)
    if told and linger:
        _wait(store, f"{PREFIX}never", 5.0)  # rank 0 ends first, then torchrun stops this rank
    raise shown_elsewhere(error, told and (refused is None or rank not in others))


def _wait(store: Any, key: str, seconds: float) -> bool:
    """Whether ``key`` is set in the store within ``seconds`` (False too when the store went away)."""
    try:
        store.wait([key], datetime.timedelta(seconds=seconds))
    except Exception:
        return False
    return True


def _ranks(ranks: Sequence[int]) -> str:
    return ", ".join(f"rank {r}" for r in ranks)


def describe_error(exc: BaseException) -> tuple[int, str]:
    """An error's exit code and one line, as the command line would print them."""
    if isinstance(exc, PathotuneError):
        return exc.exit_code, exc.one_line()
    if isinstance(exc, OSError):
        mapped = os_error(exc)
        return mapped.exit_code, mapped.one_line()
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    return 1, f"{type(exc).__name__}: {first_line(exc)}"


def first_line(exc: BaseException) -> str:
    """The first sentence of an error's first line (``errors.first_line``): what a rank's one line quotes."""
    return whole_first_line(exc).split(". ")[0]

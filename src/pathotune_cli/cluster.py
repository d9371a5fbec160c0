"""Where this process stands on a cluster: its rank under ``torchrun`` or ``srun``, and its shard of the slides.

Two ways to use many processes, and the environment variables each reads (only these, and only at the command
line's edge: ``cli`` resolves them and passes plain values down):

- **One training run over several processes** (``tune``): torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, or
  srun's ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` (with ``MASTER_ADDR``/``MASTER_PORT``).
- **Per-slide work dealt out** (``tile``, ``predict``, ``features``): ``--shard I/N`` takes every N-th slide from
  the I-th, slides sorted by path; without it a SLURM array task (``SLURM_ARRAY_TASK_ID``, ``_COUNT``, ``_MIN``,
  ``_STEP``) or a torchrun/srun rank is a shard; else the process takes every slide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pathotune_cli.errors import BadInput

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a multi-process run (rank 0 of 1 when started alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    """The rank among this node's processes: it picks the GPU (``hardware.rank_gpu``: ``cuda:<local_rank>`` of the
    GPUs this process sees, ``cuda:0`` when srun gives each task its own)."""
    launcher: str = ""
    """``torchrun``, ``srun`` or empty (a single process)."""

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1


@dataclass(frozen=True)
class Shard:
    """Which slides this process takes: every ``count``-th from ``index``, slides sorted by path."""

    index: int = 0
    count: int = 1
    source: str = ""
    """Where it came from: ``--shard``, ``SLURM_ARRAY_TASK_ID``, ``RANK``, ``--devices`` or empty (every slide)."""
    local_rank: int | None = None
    """Under torchrun or srun: this process's rank on its node (its GPU when ``--device auto``)."""

    @property
    def whole(self) -> bool:
        """Every slide (no sharding)."""
        return self.count == 1

    @property
    def label(self) -> str:
        """``I/N``."""
        return f"{self.index}/{self.count}"

    def take(self, items: Sequence[T], key: Callable[[T], Any] = str) -> list[T]:
        """This shard's items: all sorted by ``key`` (the path), then every ``count``-th from ``index``.

        Raises:
            BadInput: The shard came from the environment (a SLURM array, torchrun or srun) and there are fewer
                slides than shards: the script most likely hands each task its own slides already
                (``predict M ${SLIDES[$SLURM_ARRAY_TASK_ID]}``), and sharding those would leave tasks with
                nothing to do and exit 0. An explicit ``--shard`` is taken as asked.
        """
        if self.source in ENVIRONMENT_SOURCES and self.count > len(items):
            raise BadInput(
                f"{self.source} makes this process shard {self.label} (one slide in {self.count}, sorted by path), "
                f"and {len(items)} slide{'s were' if len(items) != 1 else ' was'} given: some shards would have none",
                "to run the slides given here in this task, pass --shard 0/1; to share a folder among the tasks, "
                "give every task the whole folder and at most as many tasks as slides")
        ordered = sorted(items, key=key)
        return ordered[self.index :: self.count]

    def split(self, part: int, parts: int, source: str = "--devices") -> Shard:
        """Part ``part`` of ``parts`` of this shard, itself a shard of the whole list.

        Every ``count``-th slide from ``index``, then every ``parts``-th of those from ``part``, is every
        ``count * parts``-th slide from ``index + count * part``.
        """
        return Shard(self.index + self.count * part, self.count * parts, source)

    def run_record_name(self) -> str:
        """``run.json`` for the whole list, ``run-<I>-of-<N>.json`` for a shard (shards never overwrite each other)."""
        return "run.json" if self.whole else f"run-{self.index}-of-{self.count}.json"


WHOLE = Shard()

ENVIRONMENT_SOURCES = ("SLURM_ARRAY_TASK_ID", "RANK", "SLURM_PROCID")
"""Shards the process was given by its launcher, not by ``--shard``."""


def parse_shard(text: str) -> Shard:
    """``"I/N"`` as a shard (``0 <= I < N``).

    Raises:
        BadInput: The text is not two integers ``I/N`` with ``0 <= I < N``.
    """
    parts = text.strip().split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index, count = None, None
    if index is None or count is None or count < 1 or not 0 <= index < count:
        raise BadInput(f"--shard {text!r} is not I/N with 0 <= I < N",
                       "e.g. --shard 0/4 for the first of four shards (slides sorted by path, every 4th from the 0th)")
    return Shard(index, count, "--shard")


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """This process's rank from torchrun's variables, else from srun's, else rank 0 of 1.

    srun counts only when it started more than one task in this step (``SLURM_STEP_NUM_TASKS``), so a command
    run directly in a batch script (which also sees ``SLURM_PROCID=0``) stays a single process.

    Raises:
        BadInput: The variables are not integers, or the rank lies outside the world.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        values = _ints(env, ("RANK", "WORLD_SIZE"), {"LOCAL_RANK": "0"})
        world = World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], "torchrun")
    elif _int_or(env, "SLURM_STEP_NUM_TASKS", 1) > 1 and "SLURM_PROCID" in env:
        values = _ints(env, ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"), {"SLURM_LOCALID": "0"})
        world = World(values["SLURM_PROCID"], values["SLURM_STEP_NUM_TASKS"], values["SLURM_LOCALID"], "srun")
    else:
        return World()
    if not 0 <= world.rank < world.size:
        raise BadInput(f"{world.launcher} says rank {world.rank} of {world.size}", "start the processes again")
    return world


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard:
    """A SLURM array task's shard, else a torchrun/srun rank's, else every slide.

    The array task's index is ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` (MIN 0
    and STEP 1 when unset) of ``SLURM_ARRAY_TASK_COUNT``: ``--array=0-9`` and ``--array=1-10`` both give shards
    0/10 ... 9/10.

    Raises:
        BadInput: The array's ids are not evenly spaced (``--array=1,5,9``) or the variables are not integers.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        values = _ints(env, ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
                       {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "1"})
        offset = values["SLURM_ARRAY_TASK_ID"] - values["SLURM_ARRAY_TASK_MIN"]
        step, count = max(1, values["SLURM_ARRAY_TASK_STEP"]), values["SLURM_ARRAY_TASK_COUNT"]
        span = _int_or(env, "SLURM_ARRAY_TASK_MAX", values["SLURM_ARRAY_TASK_MIN"] + step * (count - 1))
        uneven = span - values["SLURM_ARRAY_TASK_MIN"] != step * (count - 1)  # --array=7,19 of a 0-49 job
        if uneven or offset % step or not 0 <= offset // step < count:
            raise BadInput(
                f"SLURM array task {values['SLURM_ARRAY_TASK_ID']} is not the n-th of {count} evenly spaced ids "
                f"from {values['SLURM_ARRAY_TASK_MIN']}",
                "pin the shard in the script (--shard $SLURM_ARRAY_TASK_ID/N) to resubmit some tasks with "
                "--array=7,19, or use --array=0-N (or A-B:S)")
        return Shard(offset // step, count, "SLURM_ARRAY_TASK_ID")
    world = world_from_env(env)
    if world.distributed:
        return Shard(world.rank, world.size, "RANK" if world.launcher == "torchrun" else "SLURM_PROCID",
                     local_rank=world.local_rank)
    return WHOLE


def resolve_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard:
    """``--shard`` when given, else what the environment says (``shard_from_env``)."""
    return parse_shard(text) if text else shard_from_env(environ)


def _ints(env: Mapping[str, str], names: Sequence[str], defaults: Mapping[str, str]) -> dict[str, int]:
    values = {}
    for name in (*names, *defaults):
        text = env.get(name, defaults.get(name, ""))
        try:
            values[name] = int(text)
        except ValueError:
            raise BadInput(f"{name}={text!r} is not an integer", f"unset {name} or give it a number") from None
    return values


def _int_or(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        return default

"""Several devices on one node: one worker process per device, each a shard of the slides, in one progress bar.

``--devices 0,1`` (GPUs by index), ``--devices all`` (every GPU visible) or ``--devices cpu,cpu`` (CPU worker
processes, which share the CPUs this process may use) start one spawned process per entry. Worker ``j`` of ``k``
takes shard ``j/k`` of this process's own shard (``cluster.Shard.split``), so ``--devices`` composes with
``--shard`` and SLURM arrays. Workers write into the one output folder under the per-slide locks and rebuild its
summary as they end (``runs.per_slide.locks``, ``runs.per_slide.merge``); this process relays their events (one
slide bar for all) and joins their results. A worker that fails or dies leaves the others running; the run then
fails, naming it.
"""

from __future__ import annotations

import dataclasses
import queue as queues
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from pathotune_cli.cluster import Shard, World
from pathotune_cli.errors import BadInput, PathotuneError, first_line, os_error
from pathotune_cli.events import Message, Reporter, SlideDone, SlidesStarted, ignore
from pathotune_cli.hardware import Placement
from pathotune_cli.runs.per_slide.rows import SlideRow

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

POLL_S = 0.5


class PerSlideOptions(Protocol):
    """What ``--devices`` needs of a per-slide command's options.

    ``TileConfig``, ``PredictOptions`` and ``FeaturesOptions``: a frozen dataclass with this process's ``shard``
    (and, where the command places a model, a ``device`` field).
    """

    @property
    def shard(self) -> Shard:
        """This process's part of the slides."""
        ...


class SlidesResult(Protocol):
    """What every per-slide command's run returns: where it wrote, its rows, and how to join shards' results."""

    out: Path

    @property
    def rows(self) -> list[SlideRow]:
        """One row per slide of this run."""
        ...

    def joined(self, others: list[SlidesResult]) -> SlidesResult:
        """This result with the other workers' rows."""
        ...


Opts = TypeVar("Opts", bound=PerSlideOptions)
R = TypeVar("R", bound=SlidesResult)


@dataclass(frozen=True)
class PerSlideCommand(Generic[Opts, R]):
    """A per-slide command as ``--devices`` needs it: its name, its run, how many slides it has.

    ``places_model``: whether a worker's entry names its device (``tile`` reads on CPUs whatever the entry).
    """

    name: str
    run: Callable[[Opts, Reporter], R]
    """The command's run function (module level, so a spawned worker can find it)."""
    count: Callable[[Opts], int]
    """This process's slides for the options, listed as the run lists them (without loading a model)."""
    places_model: bool = True


def parse_devices(text: str) -> list[str]:
    """``0,1`` -> ``["cuda:0", "cuda:1"]``; ``all`` -> every visible GPU; ``cpu,cpu`` -> two CPU workers.

    Raises:
        BadInput: An entry is neither ``cpu`` nor a GPU index (or ``cuda:N``), or names a GPU that is not here.
    """
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        count = _gpu_count()
        if count == 0:
            raise BadInput("--devices all: no GPU is visible here",
                           "use --devices cpu,cpu for CPU worker processes, or leave out --devices")
        return [f"cuda:{i}" for i in range(count)]
    devices = []
    for item in items:
        index = item.removeprefix("cuda:")
        if item == "cpu":
            devices.append("cpu")
        elif index.isdigit():
            devices.append(f"cuda:{int(index)}")
        else:
            raise BadInput(f"--devices {text!r}: {item!r} is not a device",
                           "give GPU indices (0,1), all, or cpu entries (cpu,cpu)")
    if not devices:
        raise BadInput("--devices is empty", "give GPU indices (0,1), all, or cpu entries (cpu,cpu)")
    gpus = [int(d.split(":")[1]) for d in devices if d != "cpu"]
    if gpus and max(gpus) >= _gpu_count():
        raise BadInput(f"--devices {text}: this machine shows {_gpu_count()} GPU(s)",
                       "give indices below that (see `nvidia-smi`), or cpu entries")
    return devices


def shard_placement(device: str, precision: str, shard: Shard) -> Placement:
    """``hardware.place``, except that a torchrun/srun rank asking for ``auto`` or ``cuda`` gets its node's GPU.

    That GPU is ``hardware.rank_gpu``'s (``cuda:0`` where SLURM shows each task one GPU).
    """
    from pathotune_cli.hardware import place, rank_gpu

    placement = place(device, precision)
    if shard.local_rank is not None and device in ("auto", "cuda") and placement.device == "cuda":
        placement = dataclasses.replace(placement, device=rank_gpu(shard.local_rank))
    return placement


def rank_placement(device: str, precision: str, preset_precision: str, world: World) -> Placement:
    """``tune``'s device and precision; under several ranks, ``cuda`` means this node's GPU for this rank.

    That GPU is ``hardware.rank_gpu``'s (``cuda:0`` where SLURM shows each task one GPU).
    """
    from pathotune_cli.hardware import place, rank_gpu

    placement = place(device, precision if precision != "auto" else preset_precision)
    if world.distributed and placement.device == "cuda":
        placement = dataclasses.replace(placement, device=rank_gpu(world.local_rank))
    return placement


def run_command(command: PerSlideCommand[Opts, R], opts: Opts, devices: list[str] | None,
                report: Reporter = ignore) -> R:
    """``command``'s run in this process, or (``devices``) one worker process per device."""
    if devices:
        return run_on_devices(command, opts, devices, report)
    return command.run(opts, report)


def run_on_devices(command: PerSlideCommand[Opts, R], opts: Opts, devices: list[str], report: Reporter = ignore) -> R:
    """Run ``command`` (``tile``, ``predict``, ``features``) with one worker process per device; their joined result.

    Args:
        command: Which run.
        opts: Its options (``TileConfig``, ``PredictOptions``, ``FeaturesOptions``), whose ``shard`` is split.
        devices: From ``parse_devices``.
        report: Receives one ``SlidesStarted`` for all workers, every worker's notes and ``SlideDone`` events.

    Raises:
        PathotuneError: A worker failed or died (the others finished first); the line names it.
    """
    import multiprocessing

    from pathotune_cli.hardware import usable_cpus

    given = [*getattr(opts, "inputs", ()), *getattr(opts, "slides", ()), getattr(opts, "slides_csv", None)]
    if any(str(path) in ("-", "/dev/stdin") for path in given if path is not None):
        raise BadInput("--devices with a slide list on standard input: the worker processes cannot read it",
                       "write the list to a file and pass it with --slides-csv FILE")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
    events = context.Queue()
    cpu_workers = devices.count("cpu")
    threads = max(1, usable_cpus() // cpu_workers) if cpu_workers else 0
    parts = [_worker_options(command, opts, opts.shard.split(j, len(devices)), d) for j, d in enumerate(devices)]
    workers = [context.Process(target=_work, args=(command, part, events, j, threads if d == "cpu" else 0),
                               name=f"pathotune-{command.name}-{d}") for j, (part, d) in enumerate(zip(parts, devices,
                                                                                                       strict=True))]
    total = command.count(opts)
    report(SlidesStarted(total))
    names = [f"{d} (shard {p.shard.label})" for p, d in zip(parts, devices, strict=True)]
    try:
        for worker in workers:
            worker.start()
        results, errors = _relay(workers, events, report, names, total)
    except BaseException:  # Ctrl-C here: no worker outlives this process
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        raise
    finally:
        for worker in workers:
            if worker.pid is not None:
                worker.join()
    if errors:
        codes = {code for code, _ in errors.values()}
        lines = sorted({line for _, line in errors.values()})
        cls = BadInput if codes == {2} else PathotuneError
        raise cls(f"{len(errors)} of {len(workers)} device workers failed: {lines[0]}"
                  + (f" (and {len(lines) - 1} other errors)" if len(lines) > 1 else ""),
                  "the other workers' slides are recorded; rerun with --resume for the rest")
    first, *others = [cast(R, results[j]) for j in range(len(workers))]  # what each worker's run returned
    joined = cast(R, first.joined(list(others)))
    from pathotune_cli.runs.per_slide.merge import rebuild_summary

    rebuild_summary(joined.out, command.name, [r.to_summary() for r in joined.rows], report)
    return joined


def _relay(workers: list[BaseProcess], events: Queue[tuple[str, int, object]], report: Reporter, names: list[str],
           total: int) -> tuple[dict[int, object], dict[int, tuple[int, str]]]:
    """Forward the workers' events until each has sent its result or error, or died."""
    results: dict[int, object] = {}
    errors: dict[int, tuple[int, str]] = {}
    done, dead_since = 0, {}
    while len(results) + len(errors) < len(workers):
        try:
            kind, slot, payload = events.get(timeout=POLL_S)
        except queues.Empty:
            for j, worker in enumerate(workers):
                if j in results or j in errors or worker.exitcode is None:
                    continue
                dead_since.setdefault(j, time.monotonic())  # its last messages may still be in the queue
                if time.monotonic() - dead_since[j] > 4 * POLL_S:
                    errors[j] = (1, f"the worker on {names[j]} died (exit code {worker.exitcode})")
            continue
        if kind == "event":
            done = _forward(payload, report, done, total)
        elif kind == "result":
            results[slot] = payload
        else:
            errors[slot] = (payload[0], f"{names[slot]}: {payload[1]}")
    return results, errors


def _forward(event: object, report: Reporter, done: int, total: int) -> int:
    """Relay one worker event: slide counts become counts over all workers; per-worker bars are dropped."""
    if isinstance(event, SlideDone):
        done += 1
        report(dataclasses.replace(event, done=done, total=total))
    elif isinstance(event, Message):
        report(event)
    return done


def _work(command: PerSlideCommand[Opts, R], opts: Opts, events: Queue[tuple[str, int, object]], slot: int,
          threads: int) -> None:
    """A worker process: run its shard, sending every event and then its result (or its error) to the parent."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = getattr(opts, "device", "cpu")
    try:
        if device.startswith("cuda"):  # inside the try: a GPU that fails to start is this worker's one line
            torch.cuda.set_device(int(device.split(":")[1]))
        result = command.run(opts, lambda event: events.put(("event", slot, event)))
        events.put(("result", slot, result))
    except PathotuneError as exc:
        events.put(("error", slot, (exc.exit_code, exc.one_line())))
    except OSError as exc:
        mapped = os_error(exc)
        events.put(("error", slot, (mapped.exit_code, mapped.one_line())))
    except BaseException as exc:  # a worker reports whatever stopped it (CUDA errors are RuntimeErrors), then ends
        events.put(("error", slot, (1, f"internal error in the worker on {device}: {type(exc).__name__}: "
                                       f"{first_line(exc)}")))


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _worker_options(command: PerSlideCommand[Opts, R], opts: Opts, shard: Shard, device: str) -> Opts:
    """A worker's options: its shard and (a command that places a model) its device."""
    if command.places_model:
        return dataclasses.replace(opts, shard=shard, device=device)
    return dataclasses.replace(opts, shard=shard)

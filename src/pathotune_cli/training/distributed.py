"""``tune`` over several processes (``torchrun``, ``srun``): torch.distributed, with the trainable gradients summed.

Every rank builds the same model (same seed, same frozen weights: checked by fingerprint), walks the same seeded
global order, and takes its contiguous slice of each global batch. Each rank's loss is its slice's summed loss
divided by the global batch's denominator (its size, or the sum of its class weights), so after the gradients
are summed over ranks every rank holds exactly the one-process gradient of the global batch, up to float
rounding, however unevenly the batch splits (a rank with no image this step adds zeros). One flat all-reduce
per step carries the trainable gradients, which params had any, and the loss.

Why not ``DistributedDataParallel``: only the trainable tensors need syncing (prompts and head, a few hundred
thousand numbers; the frozen backbone has no gradients at all), and DDP would still broadcast every frozen
weight at start and hook into the frozen modules; it averages per-rank means, which is not the global mean for
uneven slices or class-weighted losses; and the slide-level two-pass gradient calls ``backward`` once per chunk
of tiles, which DDP would all-reduce each time. Summing after ``backward`` is the same one bucketed all-reduce
DDP does, without the overlap with backward that pays only for large trainable models.

Failures: a rank whose run raises records its error in the rendezvous store; a watchdog thread in every rank
polls it, and rank 0 prints one line naming the rank and its error before every rank stops. Ranks also leave a
heartbeat there, so a collective broken by a rank that vanished (killed, out of memory) names that rank too.
A rank whose checks failed before the run joins all the same, and every rank stops at the first meeting
(``training.ready``). gloo on CPUs, nccl on GPUs.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pathotune_cli.cluster import World
from pathotune_cli.errors import BadInput, PathotuneError, shown_elsewhere
from pathotune_cli.training.ready import PREFIX, all_ready, describe_error, first_line

COLLECTIVE_TIMEOUT_S = 1800
"""How long a collective waits for the other ranks (a slow validation pass on rank 0 must fit)."""
RENDEZVOUS_TIMEOUT_S = 600
"""How long the ranks wait for each other at the start."""
POLL_S = 0.5
"""How often the watchdog looks for another rank's failure and leaves its heartbeat."""
SILENT_AFTER_S = 120.0
"""A rank without a heartbeat this long, not finished and not failed, has stopped: rank 0 says so and stops."""


@dataclass
class Dist:
    """This rank's view of the run: who it is, and the collectives ``training`` needs (no-ops for one process)."""

    rank: int = 0
    size: int = 1
    backend: str = ""
    device: str = "cpu"
    """Where collective tensors live (``cuda:N`` for nccl)."""
    _watchdog: Any = field(default=None, repr=False)

    @property
    def main(self) -> bool:
        """Rank 0 writes the run folder and prints."""
        return self.rank == 0

    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """This rank's contiguous slice ``[lo, hi)`` of ``n`` items (the first ``n % size`` ranks get one more)."""
        r = self.rank if rank is None else rank
        base, extra = divmod(n, self.size)
        lo = r * base + min(r, extra)
        return lo, lo + base + (1 if r < extra else 0)

    def describe(self, global_batch: int) -> dict[str, Any]:
        """What ``run.json`` records: ``world_size``, ``backend`` (null alone) and the global batch's split."""
        per_rank = [self.bounds(global_batch, r)[1] - self.bounds(global_batch, r)[0] for r in range(self.size)]
        return {"world_size": self.size, "backend": self.backend or None,
                "batch": {"global": global_batch, "per_rank": per_rank}}

    def sum_gradients(self, params: Sequence[Any], extras: Sequence[float] = ()) -> list[float]:
        """Sum every param's gradient over the ranks (None only where no rank had one); returns ``extras`` summed.

        The gradients travel as one flat float32 buffer with a flag per param and the extras appended.
        """
        if self.size == 1:
            return [float(x) for x in extras]
        import torch

        flags = [1.0 if p.grad is not None else 0.0 for p in params]
        pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float().to(self.device)
                  for p in params]
        tail = torch.tensor([*flags, *extras], dtype=torch.float32, device=self.device)
        flat = torch.cat([*pieces, tail])
        self._all_reduce(flat)
        count = sum(x.numel() for x in pieces)
        had = flat[count : count + len(flags)].cpu().tolist()
        offset = 0
        for p, any_rank in zip(params, had, strict=True):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.device, p.dtype) if any_rank > 0 else None
            offset += n
        return [float(x) for x in flat[count + len(flags) :].cpu()]

    def gather_rows(self, local: Any, total: int) -> Any:
        """Every rank's slice (``bounds(total)``) of rows, concatenated in rank order on every rank."""
        if self.size == 1:
            return local
        import torch
        import torch.distributed as dist

        sizes = [self.bounds(total, r)[1] - self.bounds(total, r)[0] for r in range(self.size)]
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: len(local)] = local.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        self._collective(lambda: dist.all_gather(parts, padded))
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)]).to(local.device)

    def agree(self, what: str, value: str, fix: str) -> None:
        """Stop unless every rank holds the same ``value`` (a fingerprint, an epoch count).

        Raises:
            BadInput: Some ranks differ from rank 0; the message names them.
        """
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        digest = int(hashlib.sha256(value.encode()).hexdigest()[:15], 16)
        mine = torch.tensor([digest], dtype=torch.int64, device=self.device)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        self._collective(lambda: dist.all_gather(parts, mine))
        others = [r for r, part in enumerate(parts) if int(part) != int(parts[0])]
        if others:
            names = ", ".join(f"rank {r}" for r in others)
            raise BadInput(f"{names} {'has' if len(others) == 1 else 'have'} another {what} than rank 0", fix)

    def _all_reduce(self, tensor: Any) -> None:
        import torch.distributed as dist

        self._collective(lambda: dist.all_reduce(tensor))

    def _collective(self, call: Any) -> None:
        """Run a collective; a broken one becomes one line that names the rank that stopped, where it is known."""
        try:
            call()
        except Exception as exc:
            if isinstance(exc, PathotuneError) or not _is_comm_error(exc):
                raise
            told = self._watchdog.reported() if self._watchdog is not None else None
            if told is not None:  # the collective broke because that rank failed and left: rank 0's watchdog said so
                raise shown_elsewhere(PathotuneError(told), self.rank != 0 or self._watchdog.said) from None
            who = self._watchdog.blame() if self._watchdog is not None else []
            blame = ", ".join(f"rank {r}" for r in who) or "another rank"
            raise PathotuneError(
                f"rank {self.rank}: {blame} stopped during training ({first_line(exc)})",
                "its own log says why (torchrun's summary names its exit code); rerun with --resume",
            ) from None


SINGLE = Dist()
"""One process: every collective is a no-op."""


def sharded(dist: Dist, n: int, compute: Any) -> Any:
    """``compute(lo, hi)`` rows of ``n``, each rank its slice, gathered on every rank in order.

    With fewer rows than ranks every rank computes them all (a slice may not be empty).
    """
    if dist.size == 1 or n < dist.size:
        return compute(0, n)
    lo, hi = dist.bounds(n)
    return dist.gather_rows(compute(lo, hi), n)


def state_digest(tensors: dict[str, Any]) -> str:
    """sha256 over the names and bytes of a set of tensors: equal on two ranks only when every bit is."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def session(world: World, device: str, *, refused: BaseException | None = None,
            on_failure: Callable[[str], None] | None = None) -> Iterator[Dist]:
    """Join the other ranks for one run (a single process gets ``SINGLE``); leave cleanly, or stop them all.

    Args:
        world: This process's rank and the run's size (``cluster.world_from_env``).
        device: The run's device: ``cuda...`` picks nccl and this node's GPU (``cuda:N`` as given, else
            ``hardware.rank_gpu``), else gloo.
        refused: This rank's error from its checks before the run (weights, ``--out``): it still joins, so that
            every rank stops at once and rank 0 prints the line, instead of the others waiting for it.
        on_failure: Called with the one-line error before the ranks stop for a refusal (on every rank) or before
            the watchdog ends rank 0 for another rank's failure, so the run folder can say so.

    Raises:
        BadInput: srun started the ranks but ``MASTER_ADDR``/``MASTER_PORT`` are not set.
        PathotuneError: Some rank refused to start (its error, on the ranks that did not refuse).
    """
    if not world.distributed:
        if refused is not None:
            raise refused
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise BadInput(f"{world.launcher} started {world.size} ranks but {' and '.join(missing)} is not set",
                       "export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1) "
                       "MASTER_PORT=29500 before srun (torchrun sets both itself)")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    here_device = collective_device(device, world.local_rank)
    if backend == "nccl":
        torch.cuda.set_device(torch.device(here_device))
    store, rank, size = next(dist.rendezvous("env://", rank=world.rank, world_size=world.size,
                                             timeout=datetime.timedelta(seconds=RENDEZVOUS_TIMEOUT_S)))
    all_ready(store, rank, size, refused, on_failure, linger=world.launcher == "torchrun")
    dist.init_process_group(backend, store=store, rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    watchdog = _Watchdog(store, rank, size, on_failure)
    here = Dist(rank, size, backend, here_device, watchdog)
    watchdog.start()
    terminate = _launcher_owns_sigterm()
    try:
        yield here
    except BaseException as exc:
        shown_elsewhere(exc, watchdog.fail(exc))
        raise
    else:
        watchdog.finish()
    finally:
        watchdog.stop()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def _launcher_owns_sigterm() -> Any:
    """While the ranks train, SIGTERM ends a rank at once (the default), not as ``errors.Terminated``: torchrun and
    srun stop the other ranks with it as soon as one fails, and the line to read is the failing rank's, which the
    watchdog has printed and recorded. Returns the handler to put back (None where it cannot be changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.SIG_DFL)


def collective_device(device: str, local_rank: int) -> str:
    """Where a rank's collective tensors live: ``cpu`` for gloo; for nccl the run's GPU, ``cuda:N`` as given or
    this node's GPU for ``local_rank`` (``hardware.rank_gpu``: ``cuda:0`` where SLURM shows each task one GPU)."""
    from pathotune_cli.hardware import rank_gpu

    if not device.startswith("cuda"):
        return "cpu"
    return device if ":" in device else rank_gpu(local_rank)


class _Watchdog(threading.Thread):
    """Heartbeats into the rendezvous store, and a stop for every rank when one of them failed."""

    def __init__(self, store: Any, rank: int, size: int, on_failure: Callable[[str], None] | None = None) -> None:
        super().__init__(name="pathotune-watchdog", daemon=True)
        self.store, self.rank, self.size = store, rank, size
        self.on_failure = on_failure
        self.stopped = threading.Event()
        self.failing = False
        self.said = False
        """This rank printed another rank's failure (rank 0, before it stops)."""
        self.started_at = time.time()

    def run(self) -> None:
        polls = 0
        while not self.stopped.wait(POLL_S):
            polls += 1
            try:
                self.store.set(f"{PREFIX}alive/{self.rank}", str(time.time()))
                failures = self.store.add(f"{PREFIX}failures", 0)
                if failures and not self.failing:
                    self._stop_for(self._failure())
                silent = self.silent_ranks() if self.rank == 0 and polls % 20 == 0 else []
                if silent and not self.failing:
                    self._stop_for((1, f"rank {silent[0]} stopped answering (no heartbeat for {SILENT_AFTER_S:.0f} s)",
                                    None))
            except Exception as exc:  # the store is gone: rank 0 (which hosts it under srun) or the agent died
                if self.stopped.is_set() or self.failing:
                    return
                self._stop_for((1, f"rank {self.rank}: lost the other ranks ({first_line(exc)})", None), anyway=True)

    def fail(self, exc: BaseException, patience_s: float = 5.0) -> bool:
        """This rank's run raised: tell the others, and (not rank 0, which prints its own error) wait until rank 0
        has printed it, since torchrun stops every rank as soon as this one ends. Returns whether rank 0 did."""
        self.failing = True
        code, text = describe_error(exc)
        with contextlib.suppress(Exception):
            self.store.set(f"{PREFIX}failed/{self.rank}", f"{code}|{text}")
            self.store.add(f"{PREFIX}failures", 1)
            deadline = time.time() + patience_s
            while self.rank != 0 and not self._has(f"told/{self.rank}") and time.time() < deadline:
                time.sleep(POLL_S / 5)
            return self.rank != 0 and self._has(f"told/{self.rank}")
        return False

    def finish(self) -> None:
        """This rank ended well: its silence from now on is not a failure."""
        with contextlib.suppress(Exception):
            self.store.set(f"{PREFIX}done/{self.rank}", "1")

    def stop(self) -> None:
        """End the thread and wait for it, before the process group and its store go: a thread still inside a
        store call when they are destroyed (or when the interpreter exits) aborts the process with
        "terminate called without an active exception"."""
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10 * POLL_S)

    def silent_ranks(self, longer_than: float = SILENT_AFTER_S) -> list[int]:
        """Ranks neither finished nor failed whose last heartbeat is older than ``longer_than`` seconds."""
        now, silent = time.time(), []
        for r in range(self.size):
            if r == self.rank or self._has(f"done/{r}") or self._has(f"failed/{r}"):
                continue
            seen = float(self.store.get(f"{PREFIX}alive/{r}")) if self._has(f"alive/{r}") else self.started_at
            if now - seen > longer_than:
                silent.append(r)
        return silent

    def reported(self) -> str | None:
        """The first failure another rank reported, as one line, or None."""
        try:
            code, line, culprit = self._failure()
        except Exception:  # the store went with the rank that hosted it
            return None
        return line if culprit is not None else None

    def blame(self) -> list[int]:
        """After a collective broke: the ranks that stopped (live ones refresh their heartbeat meanwhile)."""
        time.sleep(4 * POLL_S)
        try:
            return self.silent_ranks(longer_than=3 * POLL_S)
        except Exception:  # the store went with the rank that hosted it
            return []

    def _has(self, key: str) -> bool:
        return bool(self.store.check([PREFIX + key]))

    def _failure(self) -> tuple[int, str, int | None]:
        for r in range(self.size):
            if r != self.rank and self._has(f"failed/{r}"):
                code, _, text = self.store.get(f"{PREFIX}failed/{r}").decode().partition("|")
                return int(code), f"rank {r} failed: {text}", r
        return 1, "another rank failed", None

    def _let_go(self, rank: int, patience_s: float = 5.0) -> None:
        """Give a failing rank a moment to end first, so torchrun's summary names it as the root cause."""
        deadline = time.time() + patience_s
        while time.time() < deadline:
            seen = float(self.store.get(f"{PREFIX}alive/{rank}")) if self._has(f"alive/{rank}") else 0.0
            if time.time() - seen > 3 * POLL_S:
                time.sleep(2 * POLL_S)
                return
            time.sleep(POLL_S)

    def _stop_for(self, failure: tuple[int, str, int | None], anyway: bool = False) -> None:
        """Rank 0 (or any rank, ``anyway``) prints the line; then this process ends, even mid-collective
        (after the failing rank, so that torchrun's summary names it as the root cause)."""
        code, line, culprit = failure
        if self.rank == 0 and self.on_failure is not None:  # run.json says why, not "running"
            with contextlib.suppress(Exception):
                self.on_failure(line)
        if self.rank == 0 or anyway:
            sys.stderr.write(f"error: {line}\n")
            self.said = True
        sys.stderr.flush()
        sys.stdout.flush()
        if culprit is not None and self.rank == 0:
            with contextlib.suppress(Exception):
                self.store.set(f"{PREFIX}told/{culprit}", "1")
        if culprit is not None:
            with contextlib.suppress(Exception):
                self._let_go(culprit)
        os._exit(code)


def _is_comm_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    error = getattr(dist, "DistError", ())
    text = str(exc)
    return isinstance(exc, error) or any(w in text for w in ("Gloo", "gloo", "NCCL", "Connection closed", "timed out"))

"""The one per-slide engine: every per-slide command (``tile``, ``predict`` at both levels, ``features``) runs here.

A command describes only what differs (a ``SlideJob``: its record name, its key, its outputs, the work on one
slide, its summary's columns); the engine does the rest, the same way for all of them:

1. the run record (``run.json``, or a shard's ``run-<I>-of-<N>.json``) says ``running``, then ``finished``;
2. each slide of this process's shard, in order, under its lock (``per_slide.locks``): a slide another live
   process holds is ``locked`` and skipped; with ``--resume`` one finished earlier with the same key is kept
   (``per_slide.resume``); otherwise the job writes its outputs under temporary names (``files.Staging``), the
   old record goes, the outputs are renamed into place and the new record is written last;
3. a slide that fails leaves no output, a record with its one-line error, and the others go on;
4. a progress event per slide, and the folder's summary (``manifest.csv``/``summary.csv``) rebuilt from the
   records as slides finish and when the run ends (``per_slide.merge``).

Jobs whose work can move to another process (``tile``) may run ``parallel`` slides in worker processes.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pathotune_cli.cluster import Shard
from pathotune_cli.errors import describe
from pathotune_cli.events import Reporter, SlideDone, SlidesStarted, SlideStarted, ignore
from pathotune_cli.files import Staging, remove_stale_temporaries
from pathotune_cli.runs.per_slide.locks import clear_stale, lock_path, slide_lock
from pathotune_cli.runs.per_slide.merge import rebuild_summary, write_summary_rows
from pathotune_cli.runs.per_slide.resume import (
    SlideKey,
    decide,
    folder_rows,
    input_identity,
    record_failure,
    record_path,
    write_record,
)
from pathotune_cli.runs.per_slide.rows import SlideInput, SlideRow
from pathotune_cli.runs.records import write_slides_record


class SlideJob(ABC):
    """What a per-slide command does to one slide; the engine does everything around it.

    A job is built once per run (it holds the model, the options, the output folder) and must not keep state
    between slides. One that runs in worker processes (``parallel``) must pickle.
    """

    command: ClassVar[str]
    """Names the per-slide records (``<stem>.<command>.json``), locks and the summary file."""

    def __init__(self, out: Path, report: Reporter = ignore) -> None:
        self.out = Path(out)
        self.report = report

    @abstractmethod
    def settings(self, slide: SlideInput) -> dict[str, object]:
        """Every setting this slide's outputs depend on (with the input file's identity, the slide's key)."""

    @abstractmethod
    def outputs(self, stem: str) -> list[Path]:
        """Every final path of one slide's outputs (a failed slide's are removed; ``--resume`` checks them)."""

    @abstractmethod
    def process(self, slide: SlideInput, staged: Staging) -> SlideRow:
        """Do one slide: write its outputs under ``staged.temp(final)`` names and return its ``ok`` row.

        Raises whatever stops the slide; the engine turns it into the slide's failure line.
        """

    def session(self) -> contextlib.AbstractContextManager[None]:
        """What every slide of the run shares while it runs (reading processes); nothing by default."""
        return contextlib.nullcontext()

    def label(self, slide: SlideInput) -> str:
        """How the slide's row names it: its path (``predict`` names it by file name)."""
        return str(slide.path)

    def __getstate__(self) -> dict[str, object]:
        """A job sent to a worker process leaves its reporter behind (rows carry the notes back instead)."""
        return {**self.__dict__, "report": ignore}

    def key(self, slide: SlideInput) -> SlideKey:
        """The slide's key: its file's identity and ``settings``."""
        return SlideKey(input=input_identity(slide.path), settings=self.settings(slide))


@dataclass(frozen=True)
class RunPlan:
    """The slides of a run and how to run them."""

    slides: list[SlideInput]
    """This process's share (``shard``) of ``everything``, in order."""
    everything: list[SlideInput]
    """Every slide of the run (every shard's): the run record lists them for ``merge``."""
    shard: Shard
    settings: dict[str, object]
    """The run's options as plain data, for the run record."""
    resume: bool = False
    parallel: int = 1
    """Slides at once in worker processes (a job that pickles); 1: in this process."""
    finished_extra: Callable[[], dict[str, object]] = field(default=dict)
    """What the run record adds when the run ends (the kernels a model chose, the prompt file's hash)."""


def run_slides(job: SlideJob, plan: RunPlan) -> list[SlideRow]:
    """Run ``job`` over the slides of ``plan``; one row per slide, in input order.

    The folder's summary lists every slide recorded there (earlier runs' and other shards' too), sorted by name.
    """
    started = time.time()
    out, report = job.out, job.report
    remove_stale_temporaries(out)
    names = [s.path for s in plan.everything]
    write_slides_record(out, job.command, plan.shard, names, plan.settings, started, "running")
    rows = _Progress(job, plan)
    report(SlidesStarted(len(plan.slides)))
    with job.session():
        if plan.parallel > 1 and len(plan.slides) > 1:
            _in_workers(job, plan, rows)
        else:
            for index, slide in enumerate(plan.slides):
                report(SlideStarted(index, len(plan.slides), slide.name))
                rows.finish(index, one_slide(job, slide, plan.resume))
    done = rows.in_order()
    if plan.everything:
        rebuild_summary(out, job.command, [r.to_summary() for r in done], report)
    failed = sum(r.status == "failed" for r in done)
    write_slides_record(out, job.command, plan.shard, names, plan.settings, started, "finished",
                        slides=len(done), failed=failed, **plan.finished_extra())
    return done


def one_slide(job: SlideJob, slide: SlideInput, resume: bool) -> SlideRow:
    """One slide under its lock: ``locked``, kept (``--resume``, decided under the lock), done, or failed."""
    with slide_lock(job.out, slide.stem, job.command) as claim:
        if not claim.held:
            owner = claim.owner.describe() if claim.owner else "another process"
            return SlideRow(job.label(slide), "locked", error=f"{slide.name}: in progress in another process ({owner})")
        row = _unlocked(job, slide, resume)
        if claim.taken_over:
            row.notes = (claim.taken_over, *row.notes)
        return row


def _unlocked(job: SlideJob, slide: SlideInput, resume: bool) -> SlideRow:
    started = time.perf_counter()
    word = ""
    try:
        key = job.key(slide)
        if resume:
            decision = decide(job.out, slide.stem, job.command, key, job.outputs(slide.stem))
            if decision.keep:
                return SlideRow.from_record(decision.row, resume="kept")
            word = decision.resume
        with Staging() as staged:  # whatever is not renamed when this block ends (an error, Ctrl-C) is removed
            row = job.process(slide, staged)
            record_path(job.out, slide.stem, job.command).unlink(missing_ok=True)
            staged.commit()
        row.seconds = round(time.perf_counter() - started, 2)
        write_record(job.out, slide.stem, job.command, key, row.to_record())  # last: the slide is finished
        row.resume = word
        return row
    except Exception as exc:  # one broken slide never stops the others
        code, error = describe(exc, job.out)
    return failed_row(job, slide, error, round(time.perf_counter() - started, 2), word, code)


def failed_row(job: SlideJob, slide: SlideInput, error: str, seconds: float = 0.0, resume: str = "",
               code: int = 1) -> SlideRow:
    """Record a slide's failure (its outputs removed, its line in the record) and return its row."""
    line = error if slide.name in error else f"{slide.name}: {error}"
    row = SlideRow(job.label(slide), "failed", seconds=seconds, error=line, resume=resume, exit_code=code)
    record_failure(job.out, slide.stem, job.command, job.outputs(slide.stem), lambda: job.key(slide),
                   row.to_record())
    return row


class _Progress:
    """The rows as slides finish: a progress event each, and (a whole run) the summary between slides."""

    def __init__(self, job: SlideJob, plan: RunPlan) -> None:
        self.job, self.plan = job, plan
        self.rows: dict[int, SlideRow] = {}
        self.others = {Path(str(r.get("slide"))).stem: r for r in folder_rows(job.out, job.command)}

    def finish(self, index: int, row: SlideRow) -> None:
        self.rows[index] = row
        if self.plan.shard.whole:  # a shard rebuilds the folder's summary when it ends, under its lock
            write_summary_rows(self.job.out, self.job.command, self._so_far())
        detail = row.error if row.status in ("failed", "locked") else (row.resume or f"{row.tiles} tiles")
        self.job.report(SlideDone(row.name, row.status, len(self.rows), len(self.plan.slides), detail, row.notes,
                                  row.seconds))

    def in_order(self) -> list[SlideRow]:
        return [self.rows[i] for i in sorted(self.rows)]

    def _so_far(self) -> list[dict[str, object]]:
        """This run's rows over the folder's records; the slides not reached yet ``pending``."""
        waiting = {s.stem: {"slide": self.job.label(s), "status": "pending"}
                   for i, s in enumerate(self.plan.slides) if i not in self.rows}
        mine = {Path(r.slide).stem: r.to_summary() for r in self.rows.values()}
        return list({**waiting, **self.others, **mine}.values())


def _in_workers(job: SlideJob, plan: RunPlan, progress: _Progress) -> None:
    """Slides in worker processes; those ``--resume`` keeps are decided here first, so no worker starts for them."""
    import multiprocessing

    todo = []
    for index, slide in enumerate(plan.slides):
        kept = _kept(job, slide) if plan.resume else None
        if kept is not None:
            progress.finish(index, kept)
        else:
            todo.append(index)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(plan.parallel, max(1, len(todo))), mp_context=context) as pool:
        futures = {pool.submit(one_slide, job, plan.slides[i], plan.resume): i for i in todo}
        for future in as_completed(futures):
            index = futures[future]
            slide = plan.slides[index]
            try:
                row = future.result()
            except Exception as exc:  # a worker that died (a crash in a codec)
                error = f"{slide.name}: its worker process died ({type(exc).__name__}); rerun with --workers 1"
                row = failed_row(job, slide, error)
                clear_stale(lock_path(job.out, slide.stem, job.command))
            progress.finish(index, row)


def _kept(job: SlideJob, slide: SlideInput) -> SlideRow | None:
    """The slide's row if ``--resume`` keeps it, decided under its lock; None when it is to be done or locked."""
    with slide_lock(job.out, slide.stem, job.command) as claim:
        if not claim.held:
            return None
        decision = decide(job.out, slide.stem, job.command, job.key(slide), job.outputs(slide.stem))
        return SlideRow.from_record(decision.row, resume="kept") if decision.keep else None

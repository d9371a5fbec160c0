"""A per-slide command's folder summary, rebuilt from its per-slide records, and ``pathotune merge OUT``.

``tile`` and ``features`` write ``manifest.csv``, ``predict`` writes ``summary.csv``: one row per slide recorded in
the folder (``runs.per_slide.resume``), whichever run, shard or process made it, and one per slide a run record
(``run.json``, ``run-<I>-of-<N>.json``) lists without a slide record yet, so the file is never short: a shard that
ends first, or a last shard that is killed, leaves every slide of the run in it, those not done marked
``pending`` or ``in progress`` (``SUMMARY_STATUSES``). The slide's record is the truth: a run's own rows add only
their resume word (``kept``, ``redone (why)``), and only to the record they made or kept. Every shard rebuilds the
summary as it ends, under ``<command>.summary.lock`` (``runs.per_slide.locks``): the rebuilds take turns, so the last
one reads every record the others wrote, and the shard that finishes last leaves the whole folder's summary.
``merge`` does the same at any time, and counts the slides done, failed, in progress (a live lock) and missing
(listed by a run record but with no record yet: ``pending`` in the summary).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore
from pathotune_cli.files import dumps, write_csv
from pathotune_cli.runs.per_slide.locks import folder_lock, live_owner, lock_path
from pathotune_cli.runs.per_slide.resume import folder_rows

COMMANDS = ("tile", "features", "predict", "convert")
SUMMARY_FILES = {
    "tile": "manifest.csv", "features": "manifest.csv", "predict": "summary.csv", "convert": "manifest.csv",
}
LEADING_COLUMNS = ("slide", "status")
TRAILING_COLUMNS = ("seconds", "resume", "error")
SUMMARY_STATUSES = {
    "ok": "finished: its outputs are in the folder (``resume``: kept, or redone and why, when this run did it)",
    "failed": "its one-line error is in ``error``; it has no outputs (a rerun with --resume redoes it)",
    "in progress": "no record yet, and a live process holds its lock (``error`` names it)",
    "pending": "listed by a run record but not recorded yet: not reached, or its process stopped (a rerun with "
               "--resume does it); not a failure, so it changes no exit code",
}
"""The ``status`` column of every summary, and what each word means."""


@dataclass(frozen=True)
class FolderCount:
    """Where one command's slides stand in a folder."""

    command: str
    summary: Path
    ok: int
    failed: int
    in_progress: list[str] = field(default_factory=list)
    """Slides whose lock is held by a live process."""
    stale_locks: list[str] = field(default_factory=list)
    """Locks of processes that are gone: the next run takes them over."""
    missing: list[str] | None = None
    """Slides a run record lists without a slide record or a live lock, ``pending`` in the summary (None: no run
    record lists its slides)."""
    run_records: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MergeResult:
    """What ``merge`` rebuilt."""

    out: Path
    commands: list[FolderCount]

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (for ``--json``)."""
        return {"out": str(self.out),
                "commands": [{**asdict(c), "summary": str(c.summary)} for c in self.commands]}


def summary_path(out: Path, command: str) -> Path:
    """``manifest.csv`` or ``summary.csv``."""
    return Path(out) / SUMMARY_FILES[command]


def rebuild_summary(out: Path, command: str, rows: Iterable[dict[str, object]] = (), report: Reporter = ignore) -> Path:
    """The folder's summary from its records (``summary_rows``), written under the summary lock.

    Args:
        out: The output folder.
        command: ``tile``, ``features`` or ``predict``.
        rows: This run's rows (they carry ``resume``, which records do not).
        report: Told when the lock had to be waited out or taken over.

    Returns:
        The summary's path.
    """
    with folder_lock(Path(out) / f"{command}.summary.lock", report):
        return write_summary_rows(out, command, summary_rows(out, command, rows))


def summary_rows(out: Path, command: str, rows: Iterable[dict[str, object]] = ()) -> list[dict[str, Any]]:
    """One row per slide of the folder: its record, else ``in progress`` or ``pending`` (``SUMMARY_STATUSES``).

    A recorded slide's row is its record, whatever this run's ``rows`` say (another process may have redone it
    since); it takes this run's resume word only when this run's row is that record's own finish. A slide with
    no record is ``in progress`` while a live process holds its lock; otherwise it is this run's row where that
    is not ``locked`` (a record that could not be written, e.g. on a full disk), else ``pending``: a run record
    lists it, or this run found it locked.

    Args:
        out: The output folder.
        command: ``tile``, ``features`` or ``predict``.
        rows: This run's rows.

    Returns:
        The rows, unsorted (``write_summary_rows`` sorts them).
    """
    out = Path(out)
    mine = {_stem(r): r for r in rows}
    summary = {}
    for record in folder_rows(out, command):
        row = mine.get(_stem(record))
        word = row.get("resume", "") if row is not None and same_finish(record, row) else ""
        summary[_stem(record)] = {**record, "resume": word}
    names = {Path(name).stem: name for name in listed_slides(out, command)[0] or ()}
    names.update({stem: str(row.get("slide", stem)) for stem, row in mine.items()})
    for stem, name in names.items():
        if stem not in summary:
            summary[stem] = _unrecorded(out, command, stem, name, mine.get(stem))
    return list(summary.values())


def same_finish(record: dict[str, object], row: dict[str, object]) -> bool:
    """Whether this run's ``row`` is the one ``record`` holds (this run made or kept it), not an older finish.

    Every value both hold must agree (``seconds`` too: it tells two finishes apart), except a kept row's
    ``seconds`` (``predict`` and ``features`` report 0 for a kept slide).
    """
    skip = {"resume", "seconds"} if row.get("resume") == "kept" else {"resume"}
    return all(dumps(row[k], None) == dumps(v, None) for k, v in record.items() if k in row and k not in skip)


def listed_slides(out: Path, command: str) -> tuple[list[str] | None, list[str]]:
    """The slide names the run records of ``command`` list (None when none lists any), and those records' names."""
    listed: set[str] | None = None
    records = []
    for path in sorted(Path(out).glob("run*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("command") == command and "all_slides" in record:
            records.append(path.name)
            listed = (listed or set()) | {Path(str(s)).name for s in record["all_slides"]}
    return (None if listed is None else sorted(listed)), records


def _unrecorded(out: Path, command: str, stem: str, name: str, row: dict[str, object] | None) -> dict[str, Any]:
    """A slide with no record: ``in progress`` (a live lock, its owner in ``error``), this run's row, or ``pending``."""
    owner = live_owner(lock_path(out, stem, command))
    if owner is not None:
        return {"slide": name, "status": "in progress",
                "error": f"{Path(name).name}: in progress in another process ({owner.describe()})"}
    if row is not None and row.get("status") != "locked":
        return row
    return {"slide": name, "status": "pending"}


def write_summary_rows(out: Path, command: str, rows: Sequence[dict[str, object]]) -> Path:
    """Write the summary of ``rows`` (no lock, no records: the caller has them), one line per slide.

    Sorted by file name (stems are unique in a folder), so a ``pending`` row, which knows only the slide's name
    from a run record, sits where the slide's path would. Columns: ``summary_columns``.
    """
    columns = summary_columns(rows)
    ordered = sorted(rows, key=lambda r: (Path(str(r.get("slide", ""))).name, str(r.get("slide", ""))))
    return write_csv(summary_path(out, command), columns,
                     (["" if r.get(c) is None else r.get(c, "") for c in columns] for r in ordered))


def summary_columns(rows: Sequence[dict[str, object]]) -> list[str]:
    """The summary's columns: ``slide``, ``status``, the rows' own, then ``seconds``, ``resume``, ``error``.

    The middle columns come in the order the finished rows give them, which each command builds in its own
    order (classes in the prompt file's order): so a column a command adds appears without a table to update,
    and a folder never loses one.
    """
    seen = dict.fromkeys(LEADING_COLUMNS)
    for row in sorted(rows, key=lambda r: r.get("status") != "ok"):  # finished rows say the command's order
        seen.update(dict.fromkeys(k for k in row if k not in TRAILING_COLUMNS))
    return [*seen, *TRAILING_COLUMNS]


def merge_run(out: Path, report: Reporter = ignore) -> MergeResult:
    """Rebuild the summary of every per-slide command recorded in ``out`` and count where its slides stand.

    Raises:
        BadInput: ``out`` is not a folder, or holds no per-slide records or locks.
    """
    out = Path(out)
    if not out.is_dir():
        raise BadInput(f"{out} is not a folder", "pass the --out folder of tile, predict or features")
    counts = []
    for command in COMMANDS:
        rows = folder_rows(out, command)
        locks = sorted(p for p in out.glob(f"*.{command}.lock") if not p.name.endswith(".summary.lock"))
        if not rows and not locks:
            continue
        summary = rebuild_summary(out, command, report=report)
        counts.append(_count(out, command, summary, rows, locks))
    if not counts:
        raise BadInput(f"{out} holds no per-slide records of {', '.join(COMMANDS)}",
                       "pass the --out folder of one of them")
    return MergeResult(out, counts)


def _count(out: Path, command: str, summary: Path, rows: list[dict[str, object]], locks: list[Path]) -> FolderCount:
    done = {_stem(r) for r in rows}
    busy = [p.name.removesuffix(f".{command}.lock") for p in locks if live_owner(p) is not None]
    stale = [p.name for p in locks if live_owner(p) is None]
    listed, records = listed_slides(out, command)
    missing = sorted({Path(s).stem for s in listed} - done - set(busy)) if listed is not None else None
    return FolderCount(command, summary, sum(r.get("status") == "ok" for r in rows),
                       sum(r.get("status") == "failed" for r in rows), sorted(busy), stale, missing, records)


def _stem(row: dict[str, object]) -> str:
    return Path(str(row.get("slide", ""))).stem

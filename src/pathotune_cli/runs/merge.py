"""A per-slide command's folder summary, rebuilt from its per-slide records, and ``pathotune merge OUT``.

``tile`` and ``features`` write ``manifest.csv``, ``predict`` writes ``summary.csv``: one row per slide recorded in
the folder (``runs.resume``), whichever run, shard or process made it. Every shard rebuilds the summary as it
ends, under ``<command>.summary.lock`` (``runs.locks``): the rebuilds take turns, so the last one reads every
record the others wrote, and the shard that finishes last leaves the whole folder's summary. ``merge`` does the
same at any time, and counts the slides done, failed, in progress (a live lock) and missing (listed by a run
record, ``run.json`` or ``run-<I>-of-<N>.json``, but with no record yet).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore
from pathotune_cli.files import write_csv
from pathotune_cli.runs.locks import folder_lock, live_owner
from pathotune_cli.runs.resume import folder_rows

COMMANDS = ("tile", "features", "predict")
SUMMARY_FILES = {"tile": "manifest.csv", "features": "manifest.csv", "predict": "summary.csv"}
TILE_COLUMNS = ("slide", "status", "tiles", "level", "mpp", "mpp_source", "seconds", "resume", "error")
FEATURES_COLUMNS = ("slide", "status", "tiles", "dim", "mpp", "mpp_source", "seconds", "resume", "error")


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
    """Slides a run record lists without a slide record (None: no run record lists its slides)."""
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


def rebuild_summary(out: Path, command: str, rows: Iterable[dict[str, Any]] = (), classes: Sequence[str] = (),
                    report: Reporter = ignore) -> Path:
    """Every recorded slide's row (this run's ``rows`` over them, with their resume words), written under the lock.

    Args:
        out: The output folder.
        command: ``tile``, ``features`` or ``predict``.
        rows: This run's rows (they carry ``resume``, which records do not).
        classes: ``predict``: the prompt file's classes, in order (others found in older records follow).
        report: Told when the lock had to be waited out or taken over.
    """
    with folder_lock(Path(out) / f"{command}.summary.lock", report):
        folder = {_stem(r): r for r in folder_rows(Path(out), command)}
        for row in rows:  # a slide another process held is shown only until that process records it
            if row.get("status") != "locked" or _stem(row) not in folder:
                folder[_stem(row)] = row
        return write_summary_rows(out, command, list(folder.values()), classes)


def write_summary_rows(out: Path, command: str, rows: Sequence[dict[str, Any]], classes: Sequence[str] = ()) -> Path:
    """Write the summary of ``rows`` (no lock, no records: the caller has them), one line per slide, sorted."""
    if command == "predict":
        columns = predict_columns(rows, classes)
    else:
        columns = list(TILE_COLUMNS if command == "tile" else FEATURES_COLUMNS)
    ordered = sorted(rows, key=lambda r: str(r.get("slide", "")))
    return write_csv(summary_path(out, command), columns,
                     (["" if r.get(c) is None else r.get(c, "") for c in columns] for r in ordered))


def predict_columns(rows: Sequence[dict[str, Any]], classes: Sequence[str] = ()) -> list[str]:
    """``summary.csv``'s columns: per class for tile-level prompt files, label and probabilities for slide-level."""
    if any("label" in r for r in rows):
        names = _classes(rows, "prob_", classes)
        sets = ["prediction_set", "set_size"] if any("prediction_set" in r for r in rows) else []
        return ["slide", "status", "label", *[f"prob_{c}" for c in names], *sets, "tiles", "mpp", "mpp_source",
                "tissue_area_mm2", "seconds", "resume", "error"]
    names = _classes(rows, "fraction_", classes)
    return ["slide", "status", "tiles", "level", "mpp", "mpp_source", "tissue_area_mm2",
            *[f"fraction_{c}" for c in names], *[f"area_mm2_{c}" for c in names], "ood_fraction", "mean_set_size",
            "coords", "seconds", "resume", "error"]


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


def _count(out: Path, command: str, summary: Path, rows: list[dict[str, Any]], locks: list[Path]) -> FolderCount:
    done = {_stem(r) for r in rows}
    busy = [p.name.removesuffix(f".{command}.lock") for p in locks if live_owner(p) is not None]
    stale = [p.name for p in locks if live_owner(p) is None]
    listed, records = None, []
    for path in sorted(out.glob("run*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("command") == command and "all_slides" in record:
            records.append(path.name)
            listed = (listed or set()) | {Path(s).stem for s in record["all_slides"]}
    missing = sorted(listed - done - set(busy)) if listed is not None else None
    return FolderCount(command, summary, sum(r.get("status") == "ok" for r in rows),
                       sum(r.get("status") == "failed" for r in rows), sorted(busy), stale, missing, records)


def _classes(rows: Sequence[dict[str, Any]], prefix: str, first: Sequence[str]) -> list[str]:
    names = list(first)
    for row in rows:
        names += [k[len(prefix):] for k in row if k.startswith(prefix) and k[len(prefix):] not in names]
    return names


def _stem(row: dict[str, Any]) -> str:
    return Path(str(row.get("slide", ""))).stem

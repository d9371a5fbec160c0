"""A folder's summary rebuilt from its per-slide records: the record is the truth, and the file is never short."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pathotune_cli.runs.per_slide.locks import acquire, lock_path, release
from pathotune_cli.runs.per_slide.merge import merge_run, rebuild_summary
from pathotune_cli.runs.per_slide.resume import SlideKey, write_record

KEY = SlideKey(input={"name": "x"}, settings={"version": 1})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _tile_row(slide: str, status: str, seconds: float, **extra: object) -> dict[str, object]:
    return {"slide": slide, "status": status, "tiles": 4 if status == "ok" else 0, "level": 0, "mpp": 0.5,
            "mpp_source": "file", "seconds": seconds, "error": "" if status == "ok" else f"{slide}: broken", **extra}


def _run_record(out: Path, name: str, command: str, slides: list[str]) -> None:
    (out / name).write_text(json.dumps({"command": command, "status": "running", "all_slides": slides}))


def test_a_newer_record_wins_over_this_runs_older_row(tmp_path: Path) -> None:
    # shard A failed X; an overlapping --resume rerun redid X and recorded it ok; A's rebuild comes last
    write_record(tmp_path, "X", "tile", KEY, _tile_row("X.svs", "ok", 3.0))
    rebuild_summary(tmp_path, "tile", [_tile_row("X.svs", "failed", 1.0, resume="")])
    (row,) = _rows(tmp_path / "manifest.csv")
    assert (row["status"], row["tiles"], row["error"], row["resume"]) == ("ok", "4", "", "")


def test_this_runs_resume_word_shows_only_on_the_record_it_made_or_kept(tmp_path: Path) -> None:
    write_record(tmp_path, "A", "predict", KEY, {"slide": "A.svs", "status": "ok", "tiles": 4, "seconds": 2.5})
    write_record(tmp_path, "B", "predict", KEY, {"slide": "B.svs", "status": "ok", "tiles": 4, "seconds": 7.0})
    write_record(tmp_path, "C", "predict", KEY, {"slide": "C.svs", "status": "ok", "tiles": 9, "seconds": 1.0})
    rows = [{"slide": "A.svs", "status": "ok", "tiles": 4, "seconds": 0.0, "resume": "kept"},  # kept: 0 s
            {"slide": "B.svs", "status": "ok", "tiles": 4, "seconds": 7.0, "resume": "redone (it failed before)"},
            {"slide": "C.svs", "status": "ok", "tiles": 9, "seconds": 4.0, "resume": "redone (it failed before)"}]
    rebuild_summary(tmp_path, "predict", rows)
    summary = {r["slide"]: r for r in _rows(tmp_path / "summary.csv")}
    assert summary["A.svs"]["resume"] == "kept" and summary["A.svs"]["seconds"] == "2.5"  # the record's time
    assert summary["B.svs"]["resume"] == "redone (it failed before)"
    assert summary["C.svs"]["resume"] == "" and summary["C.svs"]["seconds"] == "1.0"  # another process's finish


def test_a_first_shards_summary_lists_every_slide_of_the_run(tmp_path: Path) -> None:
    _run_record(tmp_path, "run-0-of-3.json", "tile", ["a.svs", "b.svs", "c.svs", "d.svs"])
    write_record(tmp_path, "a", "tile", KEY, _tile_row("/slides/a.svs", "ok", 1.0))
    held = lock_path(tmp_path, "b", "tile")
    assert acquire(held).held  # this test process is the live owner
    try:
        rebuild_summary(tmp_path, "tile", [_tile_row("/slides/d.svs", "locked", 0.0, resume="")])
        during = _rows(tmp_path / "manifest.csv")
    finally:
        release(held)
    assert [(r["slide"], r["status"]) for r in during] == [
        ("/slides/a.svs", "ok"), ("b.svs", "in progress"), ("c.svs", "pending"), ("/slides/d.svs", "pending")]
    assert "in progress in another process (host " in during[1]["error"] and during[2]["error"] == ""
    from pathotune_cli.runs.per_slide.merge import SUMMARY_STATUSES  # every status word is documented

    assert {r["status"] for r in during} <= set(SUMMARY_STATUSES)
    count = merge_run(tmp_path).commands[0]
    assert (count.ok, count.failed, count.in_progress, count.missing) == (1, 0, [], ["b", "c", "d"])
    assert [r["status"] for r in _rows(tmp_path / "manifest.csv")] == ["ok", "pending", "pending", "pending"]


def test_a_slide_without_a_run_record_or_a_record_keeps_this_runs_row(tmp_path: Path) -> None:
    # a failure whose record could not be written (a full disk): this run's row is all there is
    rebuild_summary(tmp_path, "features", [{"slide": "e.svs", "status": "failed", "error": "e.svs: disk full"}])
    (row,) = _rows(tmp_path / "manifest.csv")
    assert (row["slide"], row["status"], row["error"]) == ("e.svs", "failed", "e.svs: disk full")

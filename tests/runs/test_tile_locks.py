"""``tile`` next to other processes: ``--resume`` decides under the slide's lock, and the manifest is never short."""

from __future__ import annotations

import contextlib
import csv
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pathotune_cli.events import SlideDone
from pathotune_cli.runs import tile
from pathotune_cli.runs.per_slide import engine
from pathotune_cli.runs.slide_level.demo import write_planted_slides
from pathotune_cli.runs.tile import TileConfig, tile_run


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    write_planted_slides(folder, count=2, size=(448, 336))
    return folder


def test_resume_keeps_a_slide_another_process_finished_while_this_one_waited_for_its_lock(
    slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slide = slides / "s00.tiff"
    done = tmp_path / "done"
    tile_run(TileConfig(slides=(slide,), out=done, tile_size=112))  # what the other process will have written
    out = tmp_path / "T"
    real_lock, tiled = engine.slide_lock, []

    @contextlib.contextmanager
    def lock_after_the_other_process_finished(folder: Path, stem: str, command: str) -> Iterator[Any]:
        if not (out / "s00.tile.json").exists():  # the other process ends just before this one gets the lock
            for path in done.glob("s00.*"):
                shutil.copy2(path, out / path.name)
        with real_lock(folder, stem, command) as claim:
            yield claim

    real_process = tile.TileJob.process
    monkeypatch.setattr(engine, "slide_lock", lock_after_the_other_process_finished)
    monkeypatch.setattr(tile.TileJob, "process", lambda self, *args: tiled.append(args) or real_process(self, *args))
    out.mkdir()
    before = (done / "s00.h5").stat().st_mtime_ns
    result = tile_run(TileConfig(slides=(slide,), out=out, tile_size=112, resume=True))
    assert [(r.status, r.resume) for r in result.rows] == [("ok", "kept")]
    assert tiled == [] and (out / "s00.h5").stat().st_mtime_ns == before  # not redone, not rewritten


def test_a_whole_runs_manifest_lists_the_slides_not_done_yet_as_pending(slides: Path, tmp_path: Path) -> None:
    seen: list[list[tuple[str, str]]] = []

    def report(event: object) -> None:
        if isinstance(event, SlideDone):
            with (tmp_path / "T" / "manifest.csv").open(newline="") as handle:
                seen.append([(Path(r["slide"]).name, r["status"]) for r in csv.DictReader(handle)])

    tile_run(TileConfig(slides=(slides,), out=tmp_path / "T", tile_size=112), report)
    assert seen == [[("s00.tiff", "ok"), ("s01.tiff", "pending")], [("s00.tiff", "ok"), ("s01.tiff", "ok")]]

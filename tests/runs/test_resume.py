"""One resume rule: a slide is kept only when its record finished with the same file, settings and outputs."""

from __future__ import annotations

import json
from pathlib import Path

from pathotune_cli.runs.per_slide.resume import (
    SlideKey,
    decide,
    folder_rows,
    input_identity,
    record_failure,
    record_path,
    write_record,
)


def _slide(tmp_path: Path, content: bytes = b"slide bytes" * 1000) -> Path:
    path = tmp_path / "in" / "a.svs"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def _finished(tmp_path: Path, settings: dict) -> tuple[Path, SlideKey, list[Path]]:
    slide, out = _slide(tmp_path), tmp_path / "out"
    out.mkdir()
    outputs = [out / "a.h5", out / "a.thumb.png"]
    for output in outputs:
        output.write_text("x")
    key = SlideKey(input_identity(slide), settings)
    write_record(out, "a", "tile", key, {"slide": str(slide), "status": "ok", "tiles": 3})
    return out, key, outputs


def test_the_same_file_settings_and_outputs_are_kept(tmp_path: Path) -> None:
    out, key, outputs = _finished(tmp_path, {"min_tissue": 0.25, "tile_size": 224})
    decision = decide(out, "a", "tile", key, outputs)
    assert decision.keep and decision.resume == "kept" and decision.row["tiles"] == 3


def test_every_changed_setting_is_named(tmp_path: Path) -> None:
    out, key, outputs = _finished(tmp_path, {"min_tissue": 0.25, "tile_size": 224, "overlap": 0})
    changed = SlideKey(key.input, {"min_tissue": 0.9, "tile_size": 224, "overlap": 16})
    decision = decide(out, "a", "tile", changed, outputs)
    assert not decision.keep and decision.resume == "redone (settings changed: min_tissue, overlap)"


def test_a_replaced_file_missing_outputs_or_a_failure_are_redone(tmp_path: Path) -> None:
    out, key, outputs = _finished(tmp_path, {"min_tissue": 0.25})
    replaced = SlideKey(input_identity(_slide(tmp_path, b"another slide" * 1000)), key.settings)
    assert decide(out, "a", "tile", replaced, outputs).resume == "redone (the input file changed)"
    outputs[1].unlink()
    assert decide(out, "a", "tile", key, outputs).resume == "redone (outputs missing: a.thumb.png)"
    record_failure(out, "a", "tile", outputs, lambda: key, {"slide": "a.svs", "status": "failed", "error": "x"})
    assert not outputs[0].exists()  # a failed slide keeps no outputs
    assert decide(out, "a", "tile", key, outputs).resume == "redone (it failed before)"
    assert decide(out, "b", "tile", key, outputs).resume == ""  # never seen


def test_the_identity_sees_a_change_at_either_end_of_a_large_file(tmp_path: Path) -> None:
    big = bytearray(b"\0" * (3 << 20))
    first = input_identity(_slide(tmp_path, bytes(big)))
    big[-1] = 1
    assert input_identity(_slide(tmp_path, bytes(big))) != first
    big[-1], big[0] = 0, 1
    assert input_identity(_slide(tmp_path, bytes(big))) != first


def test_the_folder_summary_lists_every_record_sorted_and_skips_damaged_ones(tmp_path: Path) -> None:
    key = SlideKey({"name": "x"}, {})
    for name in ("c", "a", "b"):
        write_record(tmp_path, name, "predict", key, {"slide": f"{name}.svs", "status": "ok"})
    record_path(tmp_path, "d", "predict").write_text("{not json")
    write_record(tmp_path, "e", "tile", key, {"slide": "e.svs", "status": "ok"})  # another command's
    assert [r["slide"] for r in folder_rows(tmp_path, "predict")] == ["a.svs", "b.svs", "c.svs"]
    record = json.loads(record_path(tmp_path, "a", "predict").read_text())
    assert record["key"] == {"input": {"name": "x"}, "settings": {}} and record["row"]["status"] == "ok"

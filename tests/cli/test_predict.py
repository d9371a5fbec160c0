"""`pathotune predict` over real slides, the demo slide, images and folders, with broken inputs mixed in."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.demo_data import DEMO_CLASSES, write_demo_tiles
from pathotune_cli.runs.demo import slide_agreement, write_demo_slide
from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    data = write_demo_tiles(root / "tiles", per_class=24, seed=0)
    config = resolve_config(TuneOptions(preset="demo", data=str(data), backbone="tiny-random", out=str(root / "run"),
                                        epochs=5, seed=0, sets=["train.lr=3e-3"]))
    return tune_run(config).prompts


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_on_real_svs_writes_csv_geojson_heatmap_and_summary(
    demo_prompts: Path, tmp_path: Path, data_file
) -> None:
    svs = data_file("slides/cmu-1-small-region.svs")
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(demo_prompts), str(svs), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "cmu-1-small-region.predictions.csv")
    assert rows and list(rows[0])[:5] == ["x", "y", "w", "h", "class"]
    assert [c for c in rows[0] if c.startswith("prob_")] == [f"prob_{c}" for c in DEMO_CLASSES]
    for row in rows:
        assert 0 <= int(row["x"]) and int(row["x"]) + int(row["w"]) <= 2220
        assert 0 <= int(row["y"]) and int(row["y"]) + int(row["h"]) <= 2967
        assert abs(sum(float(row[f"prob_{c}"]) for c in DEMO_CLASSES) - 1) < 1e-3
    geo = json.loads((out / "cmu-1-small-region.tiles.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(rows)
    for feature, row in zip(geo["features"], rows, strict=True):
        assert feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == [int(row["x"]), int(row["y"])] and ring[0] == ring[-1] and len(ring) == 5
        flagged = row["ood"] == "1"  # real H&E against a model tuned on synthetic tiles: many are flagged
        assert feature["properties"]["classification"]["name"] == ("Uncertain" if flagged else row["class"])
        assert set(feature["properties"]["measurements"]) == {f"prob_{c}" for c in DEMO_CLASSES} | {"ood_score", "ood"}
    from PIL import Image

    with Image.open(out / "cmu-1-small-region.heatmap.png") as img:
        assert img.size[0] > 200 and img.mode == "RGB"
    summary = _rows(out / "summary.csv")
    assert summary[0]["status"] == "ok" and int(summary[0]["tiles"]) == len(rows)
    assert float(summary[0]["tissue_area_mm2"]) > 0
    assert abs(sum(float(summary[0][f"fraction_{c}"]) for c in DEMO_CLASSES) - 1) < 1e-3
    assert not list(out.glob(".*tmp*"))


def test_demo_slide_tiles_get_the_class_of_their_region(demo_prompts: Path, tmp_path: Path) -> None:
    slide = write_demo_slide(tmp_path / "demo-slide.tiff")
    out = tmp_path / "P"
    result = runner.invoke(
        app, ["predict", str(demo_prompts), str(slide), "--out", str(out), "--json", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["slides"][0]["tiles"] > 50
    assert slide_agreement(out / "demo-slide.predictions.csv", list(DEMO_CLASSES)) >= 0.9


def test_broken_slides_fail_alone_and_the_exit_code_says_so(demo_prompts: Path, tmp_path: Path, data_file) -> None:
    svs = data_file("slides/cmu-1-small-region.svs")
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(svs.read_bytes()[: svs.stat().st_size // 3])
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n")
    good = tmp_path / "good.svs"
    shutil.copy(svs, good)
    out = tmp_path / "P"
    result = runner.invoke(
        app,
        ["predict", str(demo_prompts), str(truncated), str(text), str(good), "--out", str(out), "--workers", "0"],
    )
    assert result.exit_code == 1, result.output
    summary = {r["slide"]: r for r in _rows(out / "summary.csv")}
    assert summary["good.svs"]["status"] == "ok" and int(summary["good.svs"]["tiles"]) > 0
    for name in ("truncated.svs", "notes.svs"):
        assert summary[name]["status"] == "failed"
        assert summary[name]["error"] and "\n" not in summary[name]["error"]
    assert (out / "good.predictions.csv").is_file()
    assert not (out / "truncated.predictions.csv").exists()


def test_slide_without_mpp_is_skipped_with_the_fix(demo_prompts: Path, tmp_path: Path, data_file) -> None:
    flat = data_file("slides/unsupported/kidney-48-5.tif")
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(demo_prompts), str(flat), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 2  # the one slide failed on its input: exit 2, as any bad input
    row = _rows(out / "summary.csv")[0]
    assert row["status"] == "failed" and "--default-mpp" in row["error"]
    result = runner.invoke(app, ["predict", str(demo_prompts), str(flat), "--out", str(out), "--workers", "0",
                                 "--default-mpp", "0.5"])
    assert result.exit_code == 0, result.output
    row = _rows(out / "summary.csv")[0]
    assert row["status"] == "ok" and row["mpp_source"] == "default"


def test_images_and_folders_give_predictions_csv(demo_prompts: Path, tmp_path: Path) -> None:
    tiles = write_demo_tiles(tmp_path / "tiles", per_class=3, size=112, seed=9)
    single = tiles / "tumor" / "tumor_000.png"
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(demo_prompts), str(tiles), str(single), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 13
    correct = [r for r in rows if Path(r["path"]).parent.name == r["class"]]
    assert len(correct) >= 11


def test_reuses_coords_from_pathotune_tile(demo_prompts: Path, tmp_path: Path) -> None:
    from pathotune_cli.runs.tile import TileConfig, tile_run
    from pathotune_cli.wsi import read_coords

    slide = write_demo_slide(tmp_path / "demo-slide.tiff")
    tile_run(TileConfig(slides=(slide,), out=tmp_path / "T", target_mpp=0.5, tile_size=112, workers=0))
    coords = read_coords(tmp_path / "T" / "demo-slide.h5").coords
    keep = coords[::3]
    from pathotune_cli.wsi import write_coords

    attrs = dict(read_coords(tmp_path / "T" / "demo-slide.h5").attrs)
    write_coords(tmp_path / "subset.h5", keep, attrs)
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(demo_prompts), str(slide), "--coords", str(tmp_path / "subset.h5"),
                                 "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "demo-slide.predictions.csv")
    got = np.array([[int(r["x"]), int(r["y"])] for r in rows])
    assert np.array_equal(got, keep)


def test_resume_keeps_finished_slides_and_redoes_changed_settings(
    demo_prompts: Path, tmp_path: Path, data_file
) -> None:
    svs = data_file("slides/cmu-1-small-region.svs")
    out = tmp_path / "P"
    args = ["predict", str(demo_prompts), str(svs), "--out", str(out), "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 0
    csv_file = out / "cmu-1-small-region.predictions.csv"
    first = csv_file.stat().st_mtime_ns
    result = runner.invoke(app, [*args, "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["slides"][0]["resume"] == "kept"
    assert csv_file.stat().st_mtime_ns == first
    assert (_rows(out / "summary.csv")[0]["status"], _rows(out / "summary.csv")[0]["resume"]) == ("ok", "kept")
    result = runner.invoke(app, [*args, "--resume", "--min-tissue", "0.5", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["slides"][0]["resume"] == "redone (settings changed: min_tissue)"
    assert _rows(out / "summary.csv")[0]["resume"] == "redone (settings changed: min_tissue)"
    assert csv_file.stat().st_mtime_ns != first
    assert not list(out.glob(".*.tmp-*"))

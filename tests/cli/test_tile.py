"""``pathotune tile`` end to end: real slides, broken slides beside good ones, exit codes and outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import SLIDES
from testdata import require_data as _need


@pytest.fixture
def cmu() -> Path:
    return _need(SLIDES / "cmu-1-small-region.svs")


@pytest.fixture
def cmu_pyramid() -> Path:
    return _need(SLIDES / "cmu-1-small-region-pyramid.tiff")


def _run(*args: object):
    return CliRunner().invoke(app, ["tile", *[str(a) for a in args]])


def _manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / "manifest.csv").open() as fh:
        return {Path(row["slide"]).name: row for row in csv.DictReader(fh)}


def test_cmu_svs_tiles_coords_and_attributes(cmu: Path, tmp_path: Path) -> None:
    out = tmp_path / "T"
    result = _run(cmu, "--mpp", "0.5", "--tile-size", "224", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "cmu-1-small-region" in result.stdout and "ok" in result.stdout and "metadata" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cmu-1-small-region.h5",
        "cmu-1-small-region.thumb.png",
        "cmu-1-small-region.tile.json",
        "cmu-1-small-region.tissue.geojson",
        "manifest.csv",
        "run.json",
    ]  # nothing left under a temporary name
    with h5py.File(out / "cmu-1-small-region.h5") as h5:
        coords = h5["coords"][()]
        attrs = dict(h5["coords"].attrs)
    assert coords.dtype == np.int64 and coords.ndim == 2 and coords.shape[1] == 2
    grid = {(x, y) for y in range(0, 2689, 224) for x in range(0, 1793, 224)}  # 9 x 13, by hand
    assert {tuple(c) for c in coords.tolist()} <= grid and 30 < len(coords) < 100
    assert coords.tolist() == sorted(coords.tolist(), key=lambda c: (c[1], c[0]))  # row by row
    assert attrs["patch_size"] == 224 and attrs["patch_size_level0"] == 224 and attrs["patch_level"] == 0
    assert attrs["level0_mpp"] == pytest.approx(0.499) and attrs["target_mpp"] == pytest.approx(0.5)
    assert attrs["mpp_source"] == "metadata" and attrs["overlap"] == 0
    assert (attrs["level0_width"], attrs["level0_height"]) == (2220, 2967)
    row = _manifest(out)["cmu-1-small-region.svs"]
    assert (row["status"], int(row["tiles"]), row["level"], row["mpp_source"]) == (
        "ok",
        len(coords),
        "0",
        "metadata",
    )
    tissue = json.loads((out / "cmu-1-small-region.tissue.geojson").read_text())
    assert tissue["features"] and all(f["geometry"]["type"] == "Polygon" for f in tissue["features"])
    from PIL import Image

    assert Image.open(out / "cmu-1-small-region.thumb.png").size[1] == 1024


def test_svs_and_pyramid_give_the_same_tiles_and_json_output(
    cmu: Path, cmu_pyramid: Path, tmp_path: Path
) -> None:
    out = tmp_path / "T"
    result = _run(cmu, cmu_pyramid, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] == 2 and document["failed"] == 0
    with h5py.File(out / "cmu-1-small-region.h5") as a, h5py.File(out / "cmu-1-small-region-pyramid.h5") as b:
        assert np.array_equal(a["coords"][()], b["coords"][()])


def test_fixtures_and_broken_slides_in_one_run(tmp_path: Path) -> None:
    fixtures = _need(SLIDES / "fixtures")
    kidney = _need(SLIDES / "unsupported" / "kidney-48-5.tif")
    cmu = _need(SLIDES / "cmu-1-small-region.svs")
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(cmu.read_bytes()[: cmu.stat().st_size // 2])
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    out = tmp_path / "T"
    names = ("boxes.tiff", "small.svs", "boxes_0.dcm", "boxes_1.dcm")
    slides = [fixtures / n for n in names] + [kidney, truncated, text]
    result = _run(
        *slides,
        "--out",
        out,
        "--tile-size",
        "16",
        "--tissue",
        "none",
        "--default-mpp",
        "0.5",
        "--save-tiles",
        "png",
    )
    assert result.exit_code == 1
    rows = _manifest(out)
    assert rows["truncated.svs"]["status"] == "failed"
    assert rows["truncated.svs"]["error"].startswith("truncated.svs: the file is truncated")
    assert rows["notes.svs"]["status"] == "failed"
    assert rows["notes.svs"]["error"].startswith(
        "notes.svs: not a slide or image pathotune can read (it holds text"
    )
    for name in ("truncated.svs", "notes.svs"):
        assert "\n" not in rows[name]["error"] and rows[name]["error"] in result.stderr
    # The good slides finished: boxes has no real mpp (its 72 dpi tag is a placeholder), so --default-mpp.
    expected = {
        "boxes.tiff": (270, "default"),
        "small.svs": (1, "metadata"),
        "boxes_0.dcm": (1, "metadata"),  # the two files of one DICOM series are one slide
        "kidney-48-5.tif": (93 * 56, "default"),
    }
    for name, (tiles, source) in expected.items():
        assert (rows[name]["status"], int(rows[name]["tiles"]), rows[name]["mpp_source"]) == (
            "ok",
            tiles,
            source,
        )
    from PIL import Image

    red = np.asarray(Image.open(out / "boxes_tiles" / "boxes_x48_y48.png"))  # inside the red box
    assert red.shape == (16, 16, 3) and (red[..., 0] > 200).all() and (red[..., 1:] < 60).all()
    assert not list(out.glob(".*.tmp-*"))
    for failed in ("truncated", "notes"):  # a failed slide has its record (for the manifest) and no outputs
        assert [p.name for p in out.glob(f"{failed}*")] == [f"{failed}.tile.json"]
        assert json.loads((out / f"{failed}.tile.json").read_text())["row"]["status"] == "failed"


def test_a_slide_smaller_than_a_tile_is_ok_with_a_note(tmp_path: Path) -> None:
    small = _need(SLIDES / "fixtures" / "small.svs")
    result = _run(small, "--out", tmp_path / "T")
    assert result.exit_code == 0
    assert "small.svs: no tiles: the slide (16x16 px) is smaller than one 224 px tile" in result.stderr
    assert _manifest(tmp_path / "T")["small.svs"]["tiles"] == "0"


def test_slide_without_mpp_fails_with_how_to_supply_it(tmp_path: Path) -> None:
    kidney = _need(SLIDES / "unsupported" / "kidney-48-5.tif")
    result = _run(kidney, "--out", tmp_path / "T")
    assert result.exit_code == 2  # the one slide failed on its input
    assert "kidney-48-5.tif: no microns-per-pixel in the slide's metadata" in result.stderr
    assert "--default-mpp" in result.stderr
    csv_path = tmp_path / "slides.csv"
    csv_path.write_text(f"slide,mpp\n{kidney},0.5\n")
    result = _run("--slides-csv", csv_path, "--out", tmp_path / "T")
    assert result.exit_code == 0, result.stderr
    assert _manifest(tmp_path / "T")["kidney-48-5.tif"]["mpp_source"] == "csv"


def test_bad_usage_exits_2_with_one_line(cmu: Path, tmp_path: Path) -> None:
    cases = [
        ((cmu, "--mpp", "0.5", "--mag", "20", "--out", tmp_path), "--mpp 0.5 and --mag 20.0 exclude each other"),
        (("--out", tmp_path), "no slides given; pass slide files or folders, or --slides-csv"),
        ((tmp_path / "absent.svs", "--out", tmp_path / "T"), "absent.svs: no such file or folder"),
        ((cmu, "--overlap", "224", "--out", tmp_path / "T"), "--overlap 224 is out of range (allowed: 0 to 223"),
        ((cmu, "--tissue", "magic", "--out", tmp_path / "T"), "--tissue 'magic' is not one of 'otsu', 'none'"),
    ]
    for args, expected in cases:
        result = _run(*args)
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], (args, lines)


def test_resume_skips_finished_slides_and_workers_tile_in_parallel(
    cmu: Path, cmu_pyramid: Path, tmp_path: Path
) -> None:
    out = tmp_path / "T"
    first = _run(cmu, cmu_pyramid, "--out", out, "--mpp", "1.0", "--workers", "2")
    assert first.exit_code == 0, first.stderr
    assert {r["status"] for r in _manifest(out).values()} == {"ok"}
    assert _manifest(out)["cmu-1-small-region-pyramid.tiff"]["level"] == "1"  # 0.998 µm/px serves 1.0
    stamp = (out / "cmu-1-small-region.h5").stat().st_mtime_ns
    again = _run(cmu, cmu_pyramid, "--out", out, "--mpp", "1.0", "--resume")
    assert again.exit_code == 0
    assert {(r["status"], r["resume"]) for r in _manifest(out).values()} == {("ok", "kept")}
    assert (out / "cmu-1-small-region.h5").stat().st_mtime_ns == stamp
    changed = _run(cmu, "--out", out, "--mpp", "0.5", "--resume")  # other settings: tiled again
    assert changed.exit_code == 0
    rows = _manifest(out)
    assert rows["cmu-1-small-region.svs"]["status"] == "ok"
    assert rows["cmu-1-small-region.svs"]["resume"] == "redone (settings changed: target_mpp)"
    assert set(rows) == {"cmu-1-small-region.svs", "cmu-1-small-region-pyramid.tiff"}  # the folder's every slide


def _coords(h5: Path) -> list[list[int]]:
    with h5py.File(h5) as f:
        return f["coords"][()].tolist()


def test_resume_after_a_change_of_min_tissue_cuts_what_a_fresh_run_cuts(cmu: Path, tmp_path: Path) -> None:
    out, fresh = tmp_path / "T", tmp_path / "fresh"
    assert _run(cmu, "--out", out, "--min-tissue", "0.05").exit_code == 0
    loose = _coords(out / "cmu-1-small-region.h5")
    resumed = _run(cmu, "--out", out, "--min-tissue", "0.9", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert _run(cmu, "--out", fresh, "--min-tissue", "0.9").exit_code == 0
    strict = _coords(fresh / "cmu-1-small-region.h5")
    assert _coords(out / "cmu-1-small-region.h5") == strict and len(strict) < len(loose)
    assert _manifest(out)["cmu-1-small-region.svs"]["resume"] == "redone (settings changed: min_tissue)"


def test_resume_redoes_a_slide_replaced_under_the_same_name(cmu: Path, cmu_pyramid: Path, tmp_path: Path) -> None:
    import shutil

    slide, out = tmp_path / "s" / "slide.tiff", tmp_path / "T"
    slide.parent.mkdir()
    shutil.copy(cmu_pyramid, slide)
    assert _run(slide, "--out", out, "--mpp", "1.0").exit_code == 0
    shutil.copy(cmu, slide)  # another file under the same name
    assert _run(slide, "--out", out, "--mpp", "1.0", "--resume").exit_code == 0
    assert _manifest(out)["slide.tiff"]["resume"] == "redone (the input file changed)"
    assert _manifest(out)["slide.tiff"]["level"] == "0"  # the one-level SVS now


def test_a_slides_csv_mpp_wins_over_the_metadata_with_a_warning(cmu: Path, tmp_path: Path) -> None:
    listing = tmp_path / "slides.csv"
    listing.write_text(f"slide,mpp\n{cmu},0.25\n")
    result = _run("--slides-csv", listing, "--out", tmp_path / "T")
    assert result.exit_code == 0, result.stderr
    assert "slides CSV says mpp 0.25 but the file says 0.499" in result.stderr
    with h5py.File(tmp_path / "T" / "cmu-1-small-region.h5") as h5:
        attrs = dict(h5["coords"].attrs)
    assert attrs["mpp_source"] == "csv" and attrs["level0_mpp"] == pytest.approx(0.25)
    assert attrs["patch_size_level0"] == 448  # 224 px at 0.5 µm/px on a 0.25 µm/px scan


def test_magnification_uses_the_objective_power(cmu: Path, tmp_path: Path) -> None:
    result = _run(cmu, "--mag", "10", "--out", tmp_path / "T", "--json")
    assert result.exit_code == 0, result.stderr
    with h5py.File(tmp_path / "T" / "cmu-1-small-region.h5") as h5:
        attrs = dict(h5["coords"].attrs)
    # A 20x scan at 10x: downsample 2, footprint 448 level-0 px, read 448 px of level 0 (its only level).
    assert (attrs["patch_size_level0"], attrs["read_size"], attrs["patch_level"]) == (448, 448, 0)
    assert attrs["target_mpp"] == pytest.approx(0.998)


def test_tissue_geojson_limits_tiles(cmu: Path, tmp_path: Path) -> None:
    square = [[[0, 0], [1000, 0], [1000, 1000], [0, 1000], [0, 0]]]
    geojson = tmp_path / "tissue.geojson"
    geojson.write_text(
        json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square}})
    )
    result = _run(cmu, "--tissue-geojson", geojson, "--min-tissue", "0.9", "--out", tmp_path / "T")
    assert result.exit_code == 0, result.stderr
    with h5py.File(tmp_path / "T" / "cmu-1-small-region.h5") as h5:
        coords = h5["coords"][()]
    assert coords.tolist() == [[x, y] for y in (0, 224, 448, 672) for x in (0, 224, 448, 672)]

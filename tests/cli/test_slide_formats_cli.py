"""`tile` on every slide a lab has: CZI, OME-TIFF, OME-Zarr, a DICOM series, a slide with damaged tiles."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import SLIDES, require_data

runner = CliRunner()


@pytest.fixture(scope="module")
def region() -> np.ndarray:
    from slide_files import cmu_rgb

    return cmu_rgb()


def _manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as fh:
        return {Path(row["slide"]).name: row for row in csv.DictReader(fh)}


def test_tile_cuts_czi_and_ome_tiff_with_mpp_from_their_metadata(region: np.ndarray, tmp_path: Path) -> None:
    from slide_files import write_czi, write_ome_tiff

    czi = write_czi(tmp_path / "a.czi", region)
    ome = write_ome_tiff(tmp_path / "b.ome.tif", region)
    result = runner.invoke(app, ["tile", str(czi), str(ome), "--out", str(tmp_path / "T"), "--mpp", "0.5"])
    assert result.exit_code == 0, result.output
    rows = _manifest(tmp_path / "T")
    for name in ("a.czi", "b.ome.tif"):
        assert rows[name]["status"] == "ok" and int(rows[name]["tiles"]) > 0
        assert float(rows[name]["mpp"]) == pytest.approx(0.499) and rows[name]["mpp_source"] == "metadata"


def test_tile_cuts_an_ome_zarr_folder(region: np.ndarray, tmp_path: Path) -> None:
    from slide_files import write_ome_zarr

    slide = write_ome_zarr(tmp_path / "c.zarr", region)
    result = runner.invoke(app, ["tile", str(slide), "--out", str(tmp_path / "T"), "--mpp", "0.5"])
    assert result.exit_code == 0, result.output
    assert _manifest(tmp_path / "T")["c.zarr"]["status"] == "ok"


def test_a_dicom_series_of_two_files_is_one_slide(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(require_data(SLIDES / "fixtures" / name), folder / name)
    result = runner.invoke(app, ["tile", str(folder), "--out", str(tmp_path / "T"), "--mpp", "0.5", "--tile-size",
                                 "8", "--min-tissue", "0"])
    assert result.exit_code == 0, result.output
    assert list(_manifest(tmp_path / "T")) == ["boxes_0.dcm"]


def test_tile_finishes_a_slide_with_damaged_tiles_and_counts_them(region: np.ndarray, tmp_path: Path) -> None:
    from slide_files import damaged_pyramid

    slide = damaged_pyramid(tmp_path / "d.tiff", region, [5])
    result = runner.invoke(app, ["tile", str(slide), "--out", str(tmp_path / "T"), "--mpp", "0.5",
                                 "--save-tiles", "jpg", "--max-damaged", "0.5"])  # tile decodes tiles to save them
    assert result.exit_code == 0, result.output
    row = _manifest(tmp_path / "T")["d.tiff"]
    assert row["status"] == "ok" and int(row["tiles_damaged"]) > 0


def test_predict_maps_czi_ome_tiff_and_ome_zarr_slides(tiny_run: Path, region: np.ndarray, tmp_path: Path) -> None:
    from slide_files import write_czi, write_ome_tiff, write_ome_zarr

    czi = write_czi(tmp_path / "a.czi", region)
    ome = write_ome_tiff(tmp_path / "b.ome.tif", region)
    zarr = write_ome_zarr(tmp_path / "c.zarr", region)
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(tiny_run / "prompts.safetensors"), str(czi), str(ome), str(zarr),
                                 "--out", str(out), "--workers", "0", "--no-report"])
    assert result.exit_code == 0, result.output
    with (out / "summary.csv").open(newline="") as fh:
        rows = {Path(row["slide"]).name: row for row in csv.DictReader(fh)}
    assert {rows[n]["status"] for n in ("a.czi", "b.ome.tif", "c.zarr")} == {"ok"}
    assert int(rows["a.czi"]["tiles"]) > 0 and rows["a.czi"]["tiles"] == rows["b.ome.tif"]["tiles"]
    assert all(float(rows[n]["mpp"]) == pytest.approx(0.499, abs=1e-3) for n in ("a.czi", "b.ome.tif", "c.zarr"))


def test_predict_finishes_a_slide_with_damaged_tiles_and_fails_one_past_the_limit(
    tiny_run: Path, region: np.ndarray, tmp_path: Path
) -> None:
    from slide_files import damaged_pyramid

    slide = damaged_pyramid(tmp_path / "d.tiff", region, [5])
    prompts = str(tiny_run / "prompts.safetensors")
    result = runner.invoke(app, ["predict", prompts, str(slide), "--out", str(tmp_path / "P"), "--max-damaged", "0.5",
                                 "--min-tissue", "0", "--no-report"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "P" / "summary.csv").open(newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["status"] == "ok" and int(row["tiles_damaged"]) > 0
    refused = runner.invoke(app, ["predict", prompts, str(slide), "--out", str(tmp_path / "Q"), "--max-damaged",
                                  "0.001", "--min-tissue", "0", "--no-report"])
    assert refused.exit_code == 2 and "cannot be decoded, above the limit" in refused.output

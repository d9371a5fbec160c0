"""``pathotune convert``: a slide OpenSlide cannot read becomes a pyramid it opens, through the per-slide engine."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def region() -> np.ndarray:
    from slide_files import cmu_rgb

    return cmu_rgb()[:1024, :1536]


def test_convert_a_czi_gives_a_tiff_openslide_opens_with_its_size_and_mpp(region: np.ndarray,
                                                                         tmp_path: Path) -> None:
    import openslide
    from slide_files import write_czi

    czi = write_czi(tmp_path / "a.czi", region)
    result = runner.invoke(app, ["convert", str(czi), "--out", str(tmp_path / "C")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "C" / "manifest.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["status"] == "ok" and row["output"] == "a.tiff"
    with openslide.OpenSlide(tmp_path / "C" / "a.tiff") as slide:
        assert slide.dimensions == (region.shape[1], region.shape[0])
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.499, abs=1e-3)
        assert slide.level_count > 1
    again = runner.invoke(app, ["convert", str(czi), "--out", str(tmp_path / "C"), "--resume"])
    assert again.exit_code == 0 and "kept" in again.output


def test_convert_of_an_unsupported_format_is_one_line_and_exit_2(tmp_path: Path) -> None:
    vsi = tmp_path / "biopsy.vsi"
    vsi.write_bytes(b"II*\x00" + bytes(64))
    result = runner.invoke(app, ["convert", str(vsi), "--out", str(tmp_path / "C")])
    assert result.exit_code == 2, result.output
    assert "Olympus/Evident VSI" in result.output and "bfconvert" in result.output

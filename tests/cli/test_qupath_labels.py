"""`tile --labels`, `predict --roi` and `features --roi` on the real CMU slide with a QuPath export.

"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from qupath_files import NECROSIS, cmu_annotations, expected_labels, rect_cover
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import SLIDES, require_data

runner = CliRunner()
CMU = SLIDES / "cmu-1-small-region.svs"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))



def test_tile_labels_writes_labels_csv_with_covered_tiles_and_one_warning(tmp_path: Path) -> None:
    from pathotune_cli.wsi.coords_file import read_coords

    slide = require_data(CMU)
    annotations = cmu_annotations(tmp_path / "cmu-1-small-region.geojson")
    out = tmp_path / "T"
    result = runner.invoke(app, ["tile", str(slide), "--labels", str(annotations), "--preset", "kather2016",
                                 "--mpp", "0.5", "--tile-size", "224", "--min-tissue", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    coords = read_coords(out / "cmu-1-small-region.h5")
    want, _ = expected_labels(coords.coords, coords.footprint())
    rows = _rows(out / "labels.csv")
    assert sum(r["label"] == "TUMOR" for r in rows) == int((want == 0).sum())
    assert sum(r["label"] == "STROMA" for r in rows) == int((want == 1).sum())
    assert len([line for line in result.output.splitlines() if "unclassified" in line]) == 1



def test_predict_roi_reads_only_tiles_inside_the_regions(tiny_run: Path, tmp_path: Path) -> None:
    from pathotune_cli.wsi.plan import plan_slide

    slide = require_data(CMU)
    annotations = cmu_annotations(tmp_path / "cmu-1-small-region.geojson")
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(tiny_run / "prompts.safetensors"), str(slide), "--roi",
                                 str(annotations), "--roi-class", "Necrosis", "--min-tissue", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    plan = plan_slide(slide, target_mpp=0.5, tile_size=112, min_tissue=0)  # the region lies over glass
    footprint = plan.grid.patch_size_level0
    inside = plan.coords[rect_cover(plan.coords, footprint, NECROSIS) >= 0.5]
    rows = _rows(out / "cmu-1-small-region.predictions.csv")
    got = np.array([[int(r["x"]), int(r["y"])] for r in rows])
    assert len(got) == len(inside) > 0 and {tuple(p) for p in got} == {tuple(p) for p in inside}

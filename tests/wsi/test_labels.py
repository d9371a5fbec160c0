"""QuPath annotations to labelled tiles on the real CMU slide: counts checked against rectangle arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qupath_files import NECROSIS, TUMOR, cmu_annotations, expected_labels, feature, ring

from pathotune_cli.config import load_task_preset
from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.labels import (
    MIN_LABEL_COVER,
    label_tiles,
    labels_file_for,
    read_label_regions,
    read_labels_table,
)
from pathotune_cli.wsi.labels_csv import labelled_rows, read_labels_csv, write_labels_csv
from pathotune_cli.wsi.plan import plan_slide
from pathotune_cli.wsi.qupath_objects import classification_names
from pathotune_cli.wsi.roi import inside_roi, read_roi

from testdata import SLIDES, require_data

CMU = SLIDES / "cmu-1-small-region.svs"


@pytest.fixture(scope="module")
def cmu_plan():
    return plan_slide(require_data(CMU), target_mpp=0.5, tile_size=224, min_tissue=0)


@pytest.fixture(scope="module")
def kather():
    return load_task_preset("kather2016")


def test_labels_csv_counts_match_tiles_covered_on_the_real_slide(tmp_path: Path, cmu_plan, kather) -> None:
    regions = read_label_regions(cmu_annotations(tmp_path / "cmu.geojson"), kather, cmu_plan.level0_size)
    footprint = cmu_plan.grid.patch_size_level0
    tiles = label_tiles(regions, cmu_plan.coords, footprint)
    want, conflicts = expected_labels(cmu_plan.coords, footprint, MIN_LABEL_COVER)
    write_labels_csv(tmp_path / "labels.csv", labelled_rows(cmu_plan, tiles, kather.class_names))
    back = read_labels_csv(tmp_path / "labels.csv")
    counts = {name: back.labels.count(name) for name in kather.class_names}
    assert counts["TUMOR"] == int((want == 0).sum()) > 5
    assert counts["STROMA"] == int((want == 1).sum()) > 5
    assert sum(counts.values()) == len(back) == int((want >= 0).sum())
    assert tiles.conflicted == conflicts > 0  # the Stroma polygon laid over the Tumor region
    assert np.array_equal(tiles.labels, want)
    assert back.slides == [CMU.resolve()]
    assert set(back.footprint.tolist()) == {footprint} and set(back.tile_size.tolist()) == {224}
    assert np.allclose(back.target_mpp, cmu_plan.target_mpp, atol=1e-5)


def test_unclassified_and_unknown_regions_are_named_in_one_warning_line(tmp_path: Path, cmu_plan, kather) -> None:
    regions = read_label_regions(cmu_annotations(tmp_path / "cmu.geojson"), kather, cmu_plan.level0_size)
    line = regions.warning()
    assert line is not None and "\n" not in line
    assert "1 unclassified region" in line and "'Necrosis' (1)" in line
    assert regions.derived == {"Tumor: Positive": "TUMOR"}
    assert regions.regions == {0: 2, 1: 1}  # Tumor + the derived class; Stroma is one MultiPolygon
    assert regions.skipped == {"point or line": 1}
    assert any("Tumor: Positive" in n for n in regions.notes())


def test_derived_class_names_are_read_in_every_form_qupath_writes() -> None:
    assert classification_names({"names": ["Tumor", "Positive"], "color": [1, 2, 3]}) == ("Tumor", "Positive")
    assert classification_names({"name": "Tumor", "color": [1, 2, 3]}) == ("Tumor",)
    assert classification_names("Tumor: Positive") == ("Tumor", "Positive")
    old = {"name": "Positive", "colorRGB": -1, "parentClass": {"name": "Tumor", "colorRGB": -2}}
    assert classification_names(old) == ("Tumor", "Positive")
    assert classification_names(None) == ()


def test_a_self_intersecting_region_is_repaired_and_said(tmp_path: Path, kather) -> None:
    bowtie = [[100, 100], [500, 500], [500, 100], [100, 500], [100, 100]]
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [bowtie]}, {"name": "Tumor", "color": [1, 2, 3]})]}))
    regions = read_label_regions(path, kather, (1000, 1000))
    assert regions.repaired == 1 and regions.areas[0].is_valid
    assert regions.areas[0].area == pytest.approx(80000.0)  # two triangles of 200 x 400 / 2 each
    assert any("repaired" in n for n in regions.notes())


@pytest.mark.parametrize(("text", "match"), [
    ("not json at all", "not GeoJSON"),
    ('{"type": "FeatureCollection", "features": []}', "empty FeatureCollection"),
    ('{"hello": 1}', "not GeoJSON"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
     '{"type": "Point", "coordinates": [1, 2]}, "properties": {}}]}', "no annotated area"),
])
def test_bad_annotation_files_are_refused_with_one_line(tmp_path: Path, kather, text: str, match: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(BadInput, match=match) as caught:
        read_label_regions(path, kather)
    assert "\n" not in str(caught.value) and caught.value.fix


def test_a_region_outside_the_slide_is_refused_naming_it(tmp_path: Path, kather) -> None:
    path = tmp_path / "far.geojson"
    path.write_text(json.dumps([feature({"type": "Polygon", "coordinates": [ring((10, 10, 5000, 90))]},
                                        {"name": "Stroma", "color": [1, 2, 3]})]))
    with pytest.raises(BadInput, match=r"object 1 \('Stroma', annotation\) reaches outside the slide \(2220 x 2967"):
        read_label_regions(path, kather, (2220, 2967))


def test_a_tile_takes_a_class_only_above_the_cover_share(kather) -> None:
    import shapely

    from pathotune_cli.wsi.labels import LabelRegions

    area = shapely.box(0, 0, 150, 100)  # covers tile 0 wholly, tile 1 (100..200) by half
    regions = LabelRegions(Path("x.geojson"), tuple(kather.class_names), {1: area})
    coords = np.array([[0, 0], [100, 0], [200, 0]])
    assert label_tiles(regions, coords, 100, 0.5).labels.tolist() == [1, 1, -1]
    assert label_tiles(regions, coords, 100, 0.51).labels.tolist() == [1, -1, -1]


def test_labels_files_match_slides_by_stem_or_csv(tmp_path: Path) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "a.geojson").write_text("{}")
    assert labels_file_for(tmp_path / "a.svs", folder) == folder / "a.geojson"
    assert labels_file_for(tmp_path / "b.svs", folder) is None
    (tmp_path / "map.csv").write_text("slide,labels\nslides/b.svs,labels/a.geojson\n")
    table = read_labels_table(tmp_path / "map.csv")
    found = labels_file_for(tmp_path / "other" / "b.svs", tmp_path / "map.csv", table)
    assert found == tmp_path / "labels" / "a.geojson"


def test_roi_keeps_tiles_mostly_inside_the_regions_of_one_class(tmp_path: Path, cmu_plan) -> None:
    path = cmu_annotations(tmp_path / "cmu.geojson")
    footprint = cmu_plan.grid.patch_size_level0
    every = inside_roi(read_roi(path, cmu_plan.level0_size), cmu_plan.coords, footprint)
    necrosis = inside_roi(read_roi(path, cmu_plan.level0_size, roi_class="necrosis"), cmu_plan.coords, footprint)
    from qupath_files import rect_cover

    assert np.array_equal(necrosis, rect_cover(cmu_plan.coords, footprint, NECROSIS) >= 0.5)
    assert necrosis.sum() > 0 and every.sum() > necrosis.sum()
    assert not (necrosis & (rect_cover(cmu_plan.coords, footprint, TUMOR) > 0)).any()
    with pytest.raises(BadInput, match="no region of class 'Lymph'"):
        read_roi(path, cmu_plan.level0_size, roi_class="Lymph")


def test_predicted_tile_polygons_overlap_the_region_they_were_labelled_from(tmp_path: Path, cmu_plan, kather) -> None:
    """The round trip in coordinates: a labelled tile written as QuPath GeoJSON lies on its region."""
    from pathotune_cli.wsi.geojson import write_tiles_geojson
    from pathotune_cli.wsi.qupath_objects import read_qupath_objects

    regions = read_label_regions(cmu_annotations(tmp_path / "cmu.geojson"), kather, cmu_plan.level0_size)
    footprint = cmu_plan.grid.patch_size_level0
    tiles = label_tiles(regions, cmu_plan.coords, footprint)
    keep = tiles.labels >= 0
    probs = np.eye(len(kather.class_names))[tiles.labels[keep]]
    path = write_tiles_geojson(tmp_path / "pred.geojson", cmu_plan.coords[keep], footprint, kather.class_names, probs)
    back = read_qupath_objects(path).objects
    assert len(back) == int(keep.sum())
    for obj in back:
        index = kather.class_names.index(obj.class_name)
        assert obj.geometry.intersection(regions.areas[index]).area >= 0.5 * obj.geometry.area - 1e-6


def test_cut_labels_gives_rows_counts_and_warnings_of_one_slide(tmp_path: Path, cmu_plan, kather) -> None:
    from pathotune_cli.wsi.labels import labels_for_slides
    from pathotune_cli.wsi.labels_csv import COLUMNS, combine_labels_csv, cut_labels

    annotations = cmu_annotations(tmp_path / "cmu-1-small-region.geojson")
    found = labels_for_slides([CMU], tmp_path)
    assert found == {CMU: annotations}
    cut = cut_labels(cmu_plan, annotations, kather)
    want, conflicts = expected_labels(cmu_plan.coords, cmu_plan.grid.patch_size_level0)
    assert cut.counts()["TUMOR"] == int((want == 0).sum()) and len(cut.rows) == int((want >= 0).sum())
    lines = cut.warnings()
    assert sum("unclassified" in line for line in lines) == 1
    assert any(f"{conflicts} tile(s) lie under two classes" in line for line in lines)
    one = write_labels_csv(tmp_path / "a.labels.csv", cut.rows)
    both = combine_labels_csv([one, one], tmp_path / "labels.csv")
    assert both.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert len(read_labels_csv(both)) == 2 * len(cut.rows)
    with pytest.raises(BadInput, match="one GeoJSON file for 2 slides"):
        labels_for_slides([CMU, tmp_path / "b.svs"], annotations)


def test_an_outline_with_no_area_left_after_repair_is_refused_by_name(tmp_path: Path, kather) -> None:
    flat = [[100, 100], [300, 300], [200, 200], [100, 100]]  # every point on one line
    path = tmp_path / "flat.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [flat]}, {"name": "Stroma", "color": [1, 2, 3]})]}))
    with pytest.raises(BadInput, match=r"object 1 \('Stroma'\), an annotation outline, crosses itself and cannot be"):
        read_label_regions(path, kather)

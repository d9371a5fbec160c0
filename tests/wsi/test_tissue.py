"""Tissue masks: white and black glass, pen, transparent borders, specks; contours and QuPath GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.geojson import read_polygons, write_tissue_geojson
from pathotune_cli.wsi.tissue import mask_contours, mask_from_polygons, otsu_threshold, pen_mask, tissue_mask

H, W = 400, 600


def _scene(background: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A thumbnail with an H&E-like ellipse of tissue, plus things that are not tissue."""
    rng = np.random.default_rng(0)
    img = np.empty((H, W, 3), np.int16)
    img[:] = background
    img += rng.integers(-4, 5, size=img.shape, dtype=np.int16)  # glass / JPEG noise
    yy, xx = np.mgrid[:H, :W]
    tissue = ((xx - 300) / 170.0) ** 2 + ((yy - 200) / 110.0) ** 2 <= 1.0
    pink = np.array([215, 140, 190]) + rng.integers(-25, 26, size=(int(tissue.sum()), 3))
    purple = (xx // 9 + yy // 9) % 3 == 0  # nuclei-rich patches of haematoxylin
    img[tissue] = pink
    img[tissue & purple] = np.array([120, 70, 160])
    return img, tissue


def _finish(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_tissue_on_white_glass_with_pen_black_border_and_specks() -> None:
    img, tissue = _scene((242, 242, 240))
    img[:, :40] = (8, 8, 8)  # black scanner border
    img[20:26, 100:500] = (40, 160, 70)  # green pen line
    img[360:368, 80:560] = (50, 80, 200)  # blue pen line
    img[30:33, 560:563] = (200, 100, 160)  # a pink speck of dust, 9 px
    mask = tissue_mask(_finish(img))
    assert _iou(mask, tissue) > 0.95
    assert not mask[:, :40].any()
    assert not mask[20:26, 100:500].any()
    assert not mask[360:368, 80:560].any()
    assert not mask[30:33, 560:563].any()


@pytest.mark.parametrize("background", [(12, 12, 14), (48, 46, 50)])
def test_tissue_on_black_and_dark_grey_background(background: tuple[int, int, int]) -> None:
    img, tissue = _scene(background)
    img[~tissue] += np.random.default_rng(2).integers(-6, 7, size=(int((~tissue).sum()), 3), dtype=np.int16)
    mask = tissue_mask(_finish(img))  # dark noise has a high HSV saturation; ours floors the value
    assert _iou(mask, tissue) > 0.95


def test_transparent_border_is_not_tissue() -> None:
    img, tissue = _scene((242, 242, 240))
    rgba = np.dstack([_finish(img), np.full((H, W), 255, np.uint8)])
    rgba[:, 520:] = 0  # alpha 0 and black, as OpenSlide returns outside a scan's regions
    mask = tissue_mask(rgba)
    assert not mask[:, 520:].any()
    assert _iou(mask[:, :520], tissue[:, :520]) > 0.95


def test_empty_glass_gives_no_tissue() -> None:
    rng = np.random.default_rng(1)
    glass = (240 + rng.integers(-5, 6, size=(H, W, 3))).astype(np.uint8)
    assert tissue_mask(glass).sum() == 0


def _pen_by_hue(rgb: np.ndarray) -> np.ndarray:
    """The definition: ink has hue in [70, 245) degrees (usual formula) and chroma >= 40.

    Floats round a hue of exactly 70 or 245 either way, so those pixels get their exact answer.
    """
    px = rgb.reshape(-1, 3).astype(np.float64)
    r, g, b = px.T
    top, chroma = px.max(axis=1), np.ptp(px, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hue = 60.0 * np.where(
            top == r, ((g - b) / chroma) % 6.0, np.where(top == g, (b - r) / chroma + 2.0, (r - g) / chroma + 4.0)
        )
    pen = (hue >= 70) & (hue < 245)
    green_top, blue_top = (top != r) & (top == g), (top != r) & (top != g)
    pen[green_top & (6 * (b - r) == -5 * chroma)] = True  # hue exactly 70
    pen[blue_top & (12 * (r - g) == chroma)] = False  # hue exactly 245
    return (pen & (chroma >= 40)).reshape(rgb.shape[:-1])


def test_pen_mask_matches_the_hue_definition() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    # pixels on and beside the two hue boundaries (70 and 245 degrees), where rounding could differ
    g_top = np.array([[90, 240, 40], [91, 240, 40], [89, 240, 40], [240, 200, 250], [241, 21, 250]], np.uint8)
    rgb[0, : len(g_top)] = g_top
    expected = _pen_by_hue(rgb)
    assert np.array_equal(pen_mask(rgb), expected)
    assert expected.any() and not expected.all()
    # ink colours are pen, stains are not
    colours = np.array([[[20, 160, 60], [30, 150, 200], [40, 60, 200], [120, 40, 160], [220, 120, 160]]], np.uint8)
    assert pen_mask(colours).tolist() == [[True, True, True, False, False]]


def test_otsu_splits_two_modes() -> None:
    values = np.concatenate([np.full(100, 10.0), np.full(100, 90.0)])
    assert 10 < otsu_threshold(values) <= 90


def test_contours_are_level0_polygons_with_holes() -> None:
    mask = np.zeros((100, 200), bool)
    mask[20:80, 40:160] = True
    mask[40:60, 80:120] = False  # a hole
    polygons = mask_contours(mask, (2000, 1000))  # level 0 is 10x the mask
    assert len(polygons) == 1
    exterior, hole = polygons[0]
    assert exterior[:, 0].min() == pytest.approx(400, abs=10) and exterior[:, 0].max() == pytest.approx(
        1600, abs=10
    )
    assert exterior[:, 1].min() == pytest.approx(200, abs=10) and exterior[:, 1].max() == pytest.approx(
        800, abs=10
    )
    assert hole[:, 0].min() == pytest.approx(800, abs=10) and hole[:, 1].max() == pytest.approx(600, abs=10)


def test_geojson_round_trip_gives_back_the_mask(tmp_path: Path) -> None:
    img, tissue = _scene((242, 242, 240))
    mask = tissue_mask(_finish(img))
    path = write_tissue_geojson(tmp_path / "t.geojson", mask_contours(mask, (6000, 4000)))
    document = json.loads(path.read_text())
    assert document["type"] == "FeatureCollection"
    feature = document["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"]["name"] == "Tissue"
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    again = mask_from_polygons(read_polygons(path), (6000, 4000), (H, W))
    assert _iou(again, mask) > 0.97


def test_qupath_export_shapes_are_read(tmp_path: Path) -> None:
    square = [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]
    for document in (
        [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square}, "properties": {}}],
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [square, square]}},
        {"type": "Polygon", "coordinates": square},
    ):
        (tmp_path / "a.geojson").write_text(json.dumps(document))
        assert len(read_polygons(tmp_path / "a.geojson")) >= 1
    (tmp_path / "b.geojson").write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(BadInput, match="no Polygon"):
        read_polygons(tmp_path / "b.geojson")
    (tmp_path / "c.geojson").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        read_polygons(tmp_path / "c.geojson")

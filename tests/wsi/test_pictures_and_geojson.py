"""Tile GeoJSON for QuPath, the overview thumbnail and prediction heatmaps (the pieces ``predict`` uses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.wsi import class_colors, draw_heatmap, draw_overview, save_png, write_tiles_geojson
from pathotune_cli.wsi.thumbnail import GRID, OUTLINE, ramp

CLASSES = ["tumor", "stroma", "fat"]
COORDS = np.array([[0, 0], [224, 0], [0, 224], [224, 224]])
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])


def test_tile_features_are_level0_polygons_with_class_and_measurements(tmp_path: Path) -> None:
    path = write_tiles_geojson(tmp_path / "tiles.geojson", COORDS, 224, CLASSES, PROBS)
    document = json.loads(path.read_text())
    assert document["type"] == "FeatureCollection" and len(document["features"]) == 4
    second = document["features"][1]
    assert second["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[224, 0], [448, 0], [448, 224], [224, 224], [224, 0]]],
    }
    props = second["properties"]
    assert props["objectType"] == "tile"
    assert props["classification"] == {"name": "stroma", "color": list(class_colors(3)[1])}
    assert props["measurements"] == {"prob_tumor": 0.1, "prob_stroma": 0.8, "prob_fat": 0.1}
    assert [f["properties"]["classification"]["name"] for f in document["features"]] == [
        "tumor",
        "stroma",
        "fat",
        "tumor",
    ]


def test_empty_tile_collection_is_valid_json(tmp_path: Path) -> None:
    path = write_tiles_geojson(tmp_path / "none.geojson", np.zeros((0, 2)), 224, CLASSES, np.zeros((0, 3)))
    assert json.loads(path.read_text()) == {"type": "FeatureCollection", "features": []}


def _thumb() -> np.ndarray:
    return np.full((112, 112, 3), 240, np.uint8)  # a 448 x 448 slide at a quarter


def test_argmax_heatmap_colours_each_tile_and_adds_a_legend() -> None:
    picture = draw_heatmap(_thumb(), (448, 448), COORDS, 224, PROBS, CLASSES, alpha=1.0)
    assert picture.shape[0] >= 112 and picture.shape[1] > 112  # legend on the right
    colors = class_colors(3)
    assert tuple(picture[28, 28]) == colors[0]  # tile (0, 0): tumor
    assert tuple(picture[28, 84]) == colors[1]  # tile (224, 0): stroma
    assert tuple(picture[84, 28]) == colors[2]  # tile (0, 224): fat
    legend = picture[:, 112:].reshape(-1, 3)
    for color in colors:  # every class's swatch is in the legend
        assert (legend == np.array(color)).all(axis=1).any()


def test_probability_heatmap_uses_the_ramp() -> None:
    picture = draw_heatmap(_thumb(), (448, 448), COORDS, 224, PROBS, CLASSES, show="stroma", alpha=1.0)
    assert tuple(picture[28, 84]) == tuple(ramp(np.array(0.8)))
    assert tuple(picture[84, 84]) == tuple(ramp(np.array(0.05)))
    with pytest.raises(ValueError, match="unknown class 'necrosis'"):
        draw_heatmap(_thumb(), (448, 448), COORDS, 224, PROBS, CLASSES, show="necrosis")


def test_overview_draws_outline_and_grid(tmp_path: Path) -> None:
    square = [np.array([[40.0, 40.0], [400.0, 40.0], [400.0, 400.0], [40.0, 400.0]])]
    picture = draw_overview(_thumb(), (448, 448), polygons=[square], coords=COORDS[:1], size_level0=224)
    pixels = picture.reshape(-1, 3)
    assert (pixels == np.array(OUTLINE)).all(axis=1).any()
    bluish = pixels[:, 2].astype(int) - pixels[:, 0] > 80  # the grid, drawn translucent over grey
    assert bluish.any() and GRID[2] - GRID[0] > 80
    path = save_png(tmp_path / "o.png", picture)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

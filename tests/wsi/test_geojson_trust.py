"""Tile GeoJSON with the trust columns: extra measurements, the set as metadata, flagged tiles ``Uncertain``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pathotune_cli.wsi import class_colors, write_tiles_geojson
from pathotune_cli.wsi.geojson import UNCERTAIN_COLOR

CLASSES = ["tumor", "stroma", "fat"]
COORDS = np.array([[0, 0], [224, 0], [0, 224]])
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])


def test_flagged_tiles_are_uncertain_and_keep_their_probabilities_and_trust_measurements(tmp_path: Path) -> None:
    path = write_tiles_geojson(
        tmp_path / "tiles.geojson", COORDS, 224, CLASSES, PROBS,
        measurements={"set_size": np.array([1, 2, 1]), "ood_score": np.array([1.5, 30.25, 2.0]),
                      "ood": np.array([False, True, False])},
        metadata={"prediction_set": ["tumor", "stroma|fat", "fat"]},
        uncertain=np.array([False, True, False]),
    )
    features = json.loads(path.read_text())["features"]
    names = [f["properties"]["classification"]["name"] for f in features]
    assert names == ["tumor", "Uncertain", "fat"]
    assert features[1]["properties"]["classification"]["color"] == list(UNCERTAIN_COLOR)
    assert features[0]["properties"]["classification"]["color"] == list(class_colors(3)[0])
    flagged = features[1]["properties"]
    assert flagged["measurements"] == {"prob_tumor": 0.1, "prob_stroma": 0.8, "prob_fat": 0.1, "set_size": 2.0,
                                       "ood_score": 30.25, "ood": 1.0}
    assert all(isinstance(v, float) for v in flagged["measurements"].values())  # QuPath measurements are numbers
    assert flagged["metadata"] == {"prediction_set": "stroma|fat"}


def test_without_trust_columns_the_features_are_as_before(tmp_path: Path) -> None:
    features = json.loads(write_tiles_geojson(tmp_path / "t.geojson", COORDS, 224, CLASSES, PROBS).read_text())
    assert all("metadata" not in f["properties"] for f in features["features"])
    assert set(features["features"][0]["properties"]["measurements"]) == {"prob_tumor", "prob_stroma", "prob_fat"}


def test_uncertain_never_takes_the_colour_of_a_class_of_any_shipped_task(tmp_path: Path) -> None:
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.loader import list_presets
    from pathotune_cli.wsi.geojson import MIN_COLOR_DISTANCE, color_distance, uncertain_color

    tasks = list_presets("tasks")
    assert "kather2016" in tasks
    for name in tasks:
        colors = class_colors(len(load_task_preset(name).classes))
        assert uncertain_color(colors) == UNCERTAIN_COLOR, name  # the palette keeps clear of the grey
        assert min(color_distance(UNCERTAIN_COLOR, c) for c in colors) >= MIN_COLOR_DISTANCE, name
    kather = load_task_preset("kather2016").class_names  # EMPTY was (127, 127, 127), Uncertain (128, 128, 128)
    probs = np.eye(len(kather))
    path = write_tiles_geojson(tmp_path / "k.geojson", np.zeros((len(kather), 2)), 224, kather, probs,
                               uncertain=np.arange(len(kather)) == 7)
    colors = [f["properties"]["classification"]["color"] for f in json.loads(path.read_text())["features"]]
    assert colors[7] not in colors[:7] and min(color_distance(colors[7], c) for c in colors[:7]) >= MIN_COLOR_DISTANCE


def test_a_class_colour_near_the_grey_moves_uncertain_to_another_grey() -> None:
    from pathotune_cli.wsi.geojson import MIN_COLOR_DISTANCE, color_distance, uncertain_color

    chosen = uncertain_color([(127, 127, 127), (255, 0, 0)])
    assert chosen != UNCERTAIN_COLOR and color_distance(chosen, (127, 127, 127)) >= MIN_COLOR_DISTANCE

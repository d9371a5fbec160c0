"""Slide-level tasks end to end in the commands labs use: tune, eval, predict and features on generated slides."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.runs.slide_level.demo import write_planted_slides

runner = CliRunner()
SIZE = (672, 448)  # 3 x 2 tiles of 224 px at 0.5 µm/px (camelyon16's tiles)


def _invoke(*args: object):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_planted_slides(tmp_path_factory.mktemp("slides"), seed=3, count=10, size=SIZE)


def _csv(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "patient", "split"][: len(rows[0])])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tuned(slides: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    data = _csv(root / "slides.csv", [(p, "tumor" if i % 2 else "normal", f"p{i}", "val" if i in (6, 7) else "train")
                                      for i, p in enumerate(slides[:8])])
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", "tiny-random", "--epochs", 2,
                     "--set", "mil.tiles_per_slide=4", "--set", "mil.chunk=2", "--out", root / "RUN")
    assert result.exit_code == 0, result.output
    return root / "RUN" / "prompts.safetensors"


def test_tune_eval_predict_and_features_on_slides(tuned: Path, slides: list[Path], tmp_path: Path) -> None:
    header = json.loads(_invoke("inspect", tuned, "--json").stdout)
    assert header["tensors_verified"] and any(t["name"].startswith("mil.") for t in header["tensors"])
    test = _csv(tmp_path / "test.csv", [(p, "tumor" if i % 2 else "normal") for i, p in enumerate(slides[8:], 8)])
    result = _invoke("eval", tuned, "--data", test, "--json", "--bootstrap", 50, "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    auroc = doc["metrics"]["macro_auroc"]
    assert doc["level"] == "slide" and doc["n"] == 2 and set(auroc) == {"value", "ci_low", "ci_high"}
    assert (tmp_path / "eval" / "reliability_diagram.png").is_file()
    assert (tmp_path / "eval" / "roc_curve.png").is_file() and (tmp_path / "eval" / "predictions.csv").is_file()
    result = _invoke("predict", tuned, slides[9], "--out", tmp_path / "P")
    assert result.exit_code == 0, result.output
    with (tmp_path / "P" / "summary.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["label"] in ("normal", "tumor") and abs(float(row["prob_normal"]) + float(row["prob_tumor"]) - 1) < 1e-4
    for suffix in (".attention.png", ".top_tiles.png", ".tiles.geojson", ".predictions.csv", ".predict.json"):
        assert (tmp_path / "P" / f"{slides[9].stem}{suffix}").is_file(), suffix
    tile = json.loads((tmp_path / "P" / f"{slides[9].stem}.tiles.geojson").read_text())["features"][0]
    assert set(tile["properties"]["measurements"]) == {"attention", "attention_scaled"}
    # 2 validation slides fit no temperature: stored as absent, the probabilities reported raw (not "calibrated")
    assert doc["calibration"]["probabilities"] == "raw" and doc["calibration"]["temperature"] == 1.0


def test_slide_predictions_are_calibrated_and_explained(tuned: Path, slides: list[Path], tmp_path: Path) -> None:
    from pathotune_cli.engine.promptfile import read_prompt_file

    trust = read_prompt_file(tuned).header.trust
    assert trust is not None and trust.calibration.validation_images == 2 and trust.ood is None
    assert all(level.quantile is None for level in trust.conformal.levels)  # 2 validation slides: too few
    runs = {}
    for name, extra in (("calibrated", ["--explain-top", 2]), ("raw", ["--uncalibrated"])):
        result = _invoke("predict", tuned, slides[9], "--out", tmp_path / name, "--json", *extra)
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    assert runs["calibrated"]["probabilities"].startswith(  # no temperature from 2 validation slides
        "raw softmax probabilities (no temperature: 2 validation slides are too few to fit a temperature")
    assert trust.calibration.temperature == 1.0
    assert runs["raw"]["probabilities"].startswith("raw softmax")
    import numpy as np

    raw = np.array([runs["raw"]["slides"][0][f"prob_{c}"] for c in ("normal", "tumor")])
    calibrated = np.array([runs["calibrated"]["slides"][0][f"prob_{c}"] for c in ("normal", "tumor")])
    logit_gap = np.log(raw[1] / raw[0])  # softmax(z / T): the log-odds shrink by T
    assert abs(np.log(calibrated[1] / calibrated[0]) - logit_gap / trust.calibration.temperature) < 1e-3
    folder = tmp_path / "calibrated" / f"{slides[9].stem}.explain"
    with (folder / "explanations.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == ["1", "2"] and all((folder / r["png"]).is_file() for r in rows)
    assert float(rows[0]["attention"]) >= float(rows[1]["attention"])
    refused = _invoke("predict", tuned, slides[9], "--out", tmp_path / "sets", "--alpha", 0.1)
    assert refused.exit_code == 2 and "alpha" in refused.output and len(_lines(refused.output)) <= 3
    result = _invoke("features", slides[9], "--backbone", "tiny-random", "--out", tmp_path / "F", "--json")
    assert result.exit_code == 0, result.output
    import h5py

    with h5py.File(tmp_path / "F" / f"{slides[9].stem}.h5") as h5:
        assert h5["features"].shape[0] == h5["coords"].shape[0] > 0 and h5["features"].shape[1] == 192
        assert h5["coords"].attrs["patch_size_level0"] == 224 and h5["features"].attrs["encoder"] == "tiny-random"


def test_two_stage_and_features_reuse_and_their_refusals(slides: list[Path], tmp_path: Path) -> None:
    data = _csv(tmp_path / "slides.csv", [(p, "tumor" if i % 2 else "normal") for i, p in enumerate(slides[:6])])
    features = tmp_path / "F"
    assert _invoke("features", *slides[:6], "--backbone", "tiny-random", "--out", features).exit_code == 0
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", "tiny-random", "--method",
                     "linear", "--features", features, "--epochs", 1, "--out", tmp_path / "RUN")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "RUN" / "features").exists()  # reused, not extracted again
    other = tmp_path / "other.yaml"
    other.write_text("family: timm_vit\nmodel: vit_tiny_patch16_224\nmodel_kwargs: {depth: 2}\nweights: random\n"
                     "input_size: 112\nwidth: 192\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\n")
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", other, "--method", "linear",
                     "--features", features, "--epochs", 1, "--out", tmp_path / "RUN2")
    assert result.exit_code == 2
    assert "holds features of another backbone" in _lines(result.output)[-1]


def test_bad_slide_rows_get_a_line_each_and_exit_2(slides: list[Path], tmp_path: Path) -> None:
    data = _csv(tmp_path / "bad.csv", [
        (slides[0], "normal", "p1", "train"),
        (tmp_path / "gone.svs", "normal", "p2", "train"),
        (slides[1], "carcinoid", "p3", "train"),
        (slides[2], "tumor", "p1", "test"),
    ])
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", "tiny-random", "--out",
                     tmp_path / "RUN")
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert any("gone.svs does not exist" in line for line in lines)
    assert any("label 'carcinoid' is not a class" in line for line in lines)
    assert any("patient p1 is in both train and test" in line for line in lines)
    assert lines[-1].startswith("error:") and "and 2 more bad rows" in lines[-1]
    assert not (tmp_path / "RUN").exists()

"""Trust end to end: tune fits it, eval checks it on held-out tiles, predict and explain report it; old files load."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.demo_data import DEMO_CLASSES, write_demo_tiles
from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

runner = CliRunner()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trust")
    data = write_demo_tiles(root / "tiles", per_class=24, seed=0)  # 20 validation tiles: every alpha has a quantile
    config = resolve_config(TuneOptions(preset="demo", data=str(data), backbone="tiny-random", out=str(root / "run"),
                                        epochs=2, seed=0, sets=["train.lr=3e-3"]))
    result = tune_run(config)
    held_out = write_demo_tiles(root / "held-out", per_class=6, seed=1)
    return {"prompts": result.prompts, "run": result.run, "held_out": held_out, "root": root}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def without_trust(good: Path, out: Path) -> Path:
    """The same prompt file as an older pathotune wrote it: no trust section, no ``trust.*`` tensors."""
    from safetensors import safe_open

    from pathotune_cli.engine.promptfile import META_KEY, write_raw

    with safe_open(str(good), framework="pt") as handle:
        header = json.loads(handle.metadata()[META_KEY])
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if not k.startswith("trust.")}
    header.pop("trust")
    return write_raw(out, tensors, header)


def test_tune_stores_temperature_quantiles_and_ood_statistics_and_records_them(tuned: dict[str, Path]) -> None:
    from pathotune_cli.engine import read_prompt_file

    file = read_prompt_file(tuned["prompts"])
    trust = file.header.trust
    assert trust is not None and trust.calibration.validation_images == 20
    assert [q.alpha for q in trust.conformal.levels] == [0.05, 0.1, 0.2]
    assert all(q.quantile is not None for q in trust.conformal.levels)
    assert trust.ood is not None and trust.ood.classes == list(DEMO_CLASSES) and trust.ood.fit_images == 76
    assert {"trust.ood.means", "trust.ood.basis", "trust.ood.variances"} <= set(file.tensors)
    metrics = json.loads((tuned["run"] / "metrics.json").read_text())
    run = json.loads((tuned["run"] / "run.json").read_text())
    for record in (metrics["trust"], run["trust"]):
        assert {"temperature", "ece_before", "ece_after", "conformal_quantiles", "ood_threshold"} <= set(record)
    result = runner.invoke(app, ["inspect", str(tuned["prompts"]), "--json"])
    assert result.exit_code == 0, result.output


def test_eval_reports_ece_before_and_after_coverage_and_set_size_on_held_out_tiles(
    tuned: dict[str, Path], tmp_path: Path
) -> None:
    result = runner.invoke(app, ["eval", str(tuned["prompts"]), "--data", str(tuned["held_out"]), "--out",
                                 str(tmp_path / "E"), "--json", "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    cal = doc["calibration"]
    from pathotune_cli.engine import read_prompt_file

    fitted = not read_prompt_file(tuned["prompts"]).header.trust.calibration.note  # none when it cannot be placed
    assert cal["probabilities"] == ("calibrated" if fitted else "raw") and cal["temperature"] > 0
    for part in ("raw", "calibrated"):
        assert 0 <= cal[part]["ece"]["value"] <= 1 and 0 <= cal[part]["brier"]["value"] <= 2
        assert cal[part]["ece"]["ci_low"] is not None and len(cal[part]["reliability"]) == 15
    levels = {q["alpha"]: q for q in doc["conformal"]["levels"]}
    assert set(levels) == {0.05, 0.1, 0.2}
    assert 0 <= levels[0.1]["coverage"] <= 1 and levels[0.1]["mean_set_size"] >= levels[0.2]["mean_set_size"]
    assert levels[0.1]["coverage_ci_low"] <= levels[0.1]["coverage"] <= levels[0.1]["coverage_ci_high"]
    assert doc["ood"]["flagged"] <= doc["n"]
    assert (tmp_path / "E" / "reliability_diagram.png").is_file()


def test_predict_tiles_with_alpha_writes_prediction_set_and_ood_columns(tuned: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(tuned["prompts"]), str(tuned["held_out"]), "--alpha", "0.1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    assert list(rows[0])[-4:] == ["prediction_set", "set_size", "ood_score", "ood"]
    for row in rows:
        members = row["prediction_set"].split("|") if row["prediction_set"] else []
        assert set(members) <= set(DEMO_CLASSES) and int(row["set_size"]) == len(members)
        assert float(row["ood_score"]) >= 0 and row["ood"] in {"0", "1"}
        assert abs(sum(float(row[f"prob_{c}"]) for c in DEMO_CLASSES) - 1) < 1e-4


def test_uncalibrated_gives_the_raw_softmax_with_the_same_top_class(tuned: dict[str, Path], tmp_path: Path) -> None:
    from pathotune_cli.engine import read_prompt_file

    runs = {}
    for name, extra in (("cal", []), ("raw", ["--uncalibrated"])):
        result = runner.invoke(app, ["predict", str(tuned["prompts"]), str(tuned["held_out"]), "--out",
                                     str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        runs[name] = _rows(tmp_path / name / "predictions.csv")
    assert [r["class"] for r in runs["cal"]] == [r["class"] for r in runs["raw"]]
    if read_prompt_file(tuned["prompts"]).header.trust.calibration.temperature != 1.0:
        assert any(a["prob_tumor"] != b["prob_tumor"] for a, b in zip(runs["cal"], runs["raw"], strict=True))


def test_predict_refuses_an_alpha_the_file_does_not_store(tuned: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tuned["prompts"]), str(tuned["held_out"]), "--alpha", "0.3",
                                 "--out", str(tmp_path / "P")])
    assert result.exit_code == 2 and "alpha 0.05, 0.1, 0.2, not 0.3" in result.output


def test_old_prompt_files_without_trust_still_predict_and_evaluate_on_raw_probabilities(
    tuned: dict[str, Path], tmp_path: Path
) -> None:
    old = without_trust(tuned["prompts"], tmp_path / "old.safetensors")
    result = runner.invoke(app, ["predict", str(old), str(tuned["held_out"]), "--out", str(tmp_path / "old")])
    assert result.exit_code == 0, result.output
    assert "calibration is not available" in result.output
    rows = _rows(tmp_path / "old" / "predictions.csv")
    assert "ood" not in rows[0] and "prediction_set" not in rows[0]
    raw = runner.invoke(app, ["predict", str(tuned["prompts"]), str(tuned["held_out"]), "--uncalibrated", "--out",
                              str(tmp_path / "new-raw")])
    assert raw.exit_code == 0, raw.output
    new_raw = _rows(tmp_path / "new-raw" / "predictions.csv")
    for a, b in zip(rows, new_raw, strict=True):
        assert abs(float(a["prob_tumor"]) - float(b["prob_tumor"])) < 1e-5
    evaluated = runner.invoke(app, ["eval", str(old), "--data", str(tuned["held_out"]), "--out", str(tmp_path / "E"),
                                    "--json", "--bootstrap", "50"])
    assert evaluated.exit_code == 0, evaluated.output
    doc = json.loads(evaluated.stdout)
    assert doc["calibration"]["probabilities"] == "raw" and doc["calibration"]["calibrated"] is None
    assert doc["conformal"] is None and doc["ood"] is None
    refused = runner.invoke(app, ["predict", str(old), str(tuned["held_out"]), "--alpha", "0.1", "--out",
                                  str(tmp_path / "x")])
    assert refused.exit_code == 2 and "no conformal quantiles" in refused.output


def test_explain_writes_one_png_per_tile_with_the_tiles_shape(tuned: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    tiles = sorted((tuned["held_out"] / "tumor").glob("*.png"))[:2] + sorted((tuned["held_out"] / "adipose").glob(
        "*.png"))[:1]
    out = tmp_path / "X"
    result = runner.invoke(app, ["explain", str(tuned["prompts"]), *map(str, tiles), "--out", str(out), "--alpha",
                                 "0.2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["images"] == 3 and sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{t.stem}.explain.png" for t in tiles)
    for row in doc["rows"]:
        assert row["class"] in DEMO_CLASSES and 0 < row["probability"] <= 1 and "ood_score" in row
        with Image.open(row["png"]) as img:
            assert img.mode in ("RGB", "RGBA") and img.size[0] > img.size[1]
    assert len(_rows(out / "explanations.csv")) == 3


def test_predict_explain_top_writes_the_most_confident_tiles_of_each_class_per_slide(
    tuned: dict[str, Path], tmp_path: Path
) -> None:
    from pathotune_cli.runs.demo import write_demo_slide

    slide = write_demo_slide(tmp_path / "demo-slide.tiff")
    out = tmp_path / "S"
    args = ["predict", str(tuned["prompts"]), str(slide), "--out", str(out), "--workers", "0", "--explain-top", "1"]
    result = runner.invoke(app, [*args, "--alpha", "0.2"])
    assert result.exit_code == 0, result.output
    folder = out / "demo-slide.explain"
    pngs = sorted(p.name for p in folder.glob("*.png"))
    tiles = _rows(out / "demo-slide.predictions.csv")
    predicted = {r["class"] for r in tiles}
    assert len(pngs) == len(predicted) and {p.split("_")[0] for p in pngs} == predicted
    summary = _rows(out / "summary.csv")[0]
    assert 0 <= float(summary["ood_fraction"]) <= 1 and float(summary["mean_set_size"]) >= 0
    geo = json.loads((out / "demo-slide.tiles.geojson").read_text())
    flagged = {(int(r["x"]), int(r["y"])) for r in tiles if r["ood"] == "1"}
    for feature in geo["features"]:
        x, y = feature["geometry"]["coordinates"][0][0]
        assert (feature["properties"]["classification"]["name"] == "Uncertain") == ((x, y) in flagged)
        assert "prediction_set" in feature["properties"]["metadata"]
    again = runner.invoke(app, [*args, "--alpha", "0.1", "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["slides"][0]["resume"] == "redone (settings changed: alpha)"


def test_ood_scores_rank_real_he_tiles_above_held_out_synthetic_ones(tuned: dict[str, Path], kather_dir: Path) -> None:
    from pathotune_cli.engine import load_prompted_model
    from pathotune_cli.hardware import place
    from pathotune_cli.runs.trust.apply import load_trust
    from pathotune_cli.training.images import ImageStore
    from pathotune_cli.training.ood import auroc
    from pathotune_cli.training.outputs import model_outputs

    model, file = load_prompted_model(tuned["prompts"])
    trust = load_trust(file)
    placement = place("cpu", "fp32")
    model.place(placement)

    def scores(paths: list[Path]) -> np.ndarray:
        return trust.ood_scores(model_outputs(model, ImageStore(paths, 64), 32, placement).features)

    inside = scores(sorted(tuned["held_out"].rglob("*.png")))
    outside = scores(sorted(kather_dir.rglob("*.png")))  # real colorectal H&E: another source than the demo's
    assert auroc(inside, outside) > 0.85

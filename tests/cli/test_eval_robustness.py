"""``pathotune eval --robustness`` on the real Kather tiles: the table and the plot, the mildest shifts inside the
unshifted interval, stronger shifts changing more predictions, and per-site metrics from a site column."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import KATHER, require_data

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    kather = require_data(KATHER)
    root = tmp_path_factory.mktemp("robust")
    tuned = runner.invoke(app, ["tune", "--preset", "kather2016", "--data", str(kather), "--backbone", "tiny-random",
                                "--method", "linear", "--epochs", "3", "--precision", "fp32", "--out",
                                str(root / "RUN")])
    assert tuned.exit_code == 0, tuned.output
    data = root / "tiles.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "centre"])
        for i, path in enumerate(sorted(kather.rglob("*.png"))):
            writer.writerow([str(path), path.parent.name, "lab-a" if i % 2 else "lab-b"])
    result = runner.invoke(app, ["eval", str(root / "RUN" / "prompts.safetensors"), "--data", str(data),
                                 "--out", str(root / "eval"), "--robustness", "--bootstrap", "300",
                                 "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "A drop means" in result.output
    return {"doc": json.loads((root / "eval" / "metrics.json").read_text()), "out": root / "eval"}


def test_robustness_writes_table_and_plot(evaluated: dict) -> None:
    doc = evaluated["doc"]["robustness"]
    assert (evaluated["out"] / "robustness.png").stat().st_size > 10_000
    assert {r["family"] for r in doc["shifts"]} == {"stain", "jpeg", "blur", "resolution"}
    assert all({"accuracy", "balanced_accuracy", "accuracy_drop", "within_unshifted_ci", "changed_predictions"}
               <= set(r) for r in doc["shifts"])
    assert doc["unshifted"]["accuracy"]["value"] == evaluated["doc"]["metrics"]["accuracy"]["value"]
    assert doc["meaning"].startswith("A drop means")


def test_mildest_shift_of_each_family_stays_inside_the_unshifted_interval(evaluated: dict) -> None:
    doc = evaluated["doc"]["robustness"]
    base = doc["unshifted"]["accuracy"]
    assert base["ci_high"] - base["ci_low"] < 0.5  # a real interval, not [0, 1]
    for row in (r for r in doc["shifts"] if r["rank"] == 1):
        assert row["within_unshifted_ci"], row
        assert base["ci_low"] <= row["accuracy"]["value"] <= base["ci_high"]


def test_stronger_stain_shift_changes_more_predictions(evaluated: dict) -> None:
    """The model does react to the shifts it is tested under (a random tiny ViT sees colour more than texture)."""
    rows = sorted((r for r in evaluated["doc"]["robustness"]["shifts"] if r["family"] == "stain"),
                  key=lambda r: r["rank"])
    changed = [r["changed_predictions"] for r in rows]
    assert changed[-1] > changed[0] and changed[-1] > 0, changed


def test_site_column_gives_per_site_metrics_and_their_spread(evaluated: dict) -> None:
    sites = evaluated["doc"]["robustness"]["sites"]
    assert set(sites["per_site"]) == {"lab-a", "lab-b"}
    assert sum(v["n"] for v in sites["per_site"].values()) == 76
    values = [v["accuracy"]["value"] for v in sites["per_site"].values()]
    assert sites["accuracy_spread"] == pytest.approx(max(values) - min(values))

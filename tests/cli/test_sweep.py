"""``pathotune tune --sweep``: every combination trained, sweep.csv written, the best kept as the run's file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


def test_sweep_over_three_learning_rates_writes_sweep_csv_and_keeps_the_best(tmp_path: Path) -> None:
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.engine import read_prompt_file

    data = write_demo_tiles(tmp_path / "tiles", per_class=5, size=64, seed=0)
    out = tmp_path / "RUN"
    result = runner.invoke(app, [
        "tune", "--preset", "demo", "--data", str(data), "--backbone", "tiny-random", "--method", "linear",
        "--epochs", "1", "--precision", "fp32", "--out", str(out), "--set", "backbone.input_size=64",
        "--sweep", "train.lr=1e-4,1e-3,1e-2", "--json",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["train.lr"] for r in rows] == ["1e-4", "1e-3", "1e-2"]
    assert set(rows[0]) == {"member", "train.lr", "val_balanced_accuracy", "seconds", "best", "run"}
    scores = [float(r["val_balanced_accuracy"]) for r in rows]
    best = [r for r in rows if r["best"] == "True"]
    assert len(best) == 1 and float(best[0]["val_balanced_accuracy"]) == max(scores)
    assert scores.index(max(scores)) + 1 == int(best[0]["member"])  # ties go to the earlier member
    assert all(float(r["seconds"]) > 0 for r in rows)
    kept = out / "prompts.safetensors"
    member = out / "sweep" / best[0]["run"] / "prompts.safetensors"
    assert kept.read_bytes() == member.read_bytes() and doc["prompts"] == str(kept)
    assert read_prompt_file(kept).header.method == "linear"
    trained = [yaml.safe_load((out / "sweep" / r["run"] / "config.yaml").read_text())["train"]["lr"] for r in rows]
    assert trained == [1e-4, 1e-3, 1e-2]


@pytest.mark.parametrize("spec", ["train.lr", "train.lr=", "=1,2"])
def test_a_malformed_sweep_exits_2_with_the_form_to_write(spec: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["tune", "--preset", "demo", "--data", str(tmp_path), "--backbone", "tiny-random",
                                 "--sweep", spec])
    assert result.exit_code == 2
    assert "is not KEY=V1,V2" in result.output

"""``python -m benchmarks.accuracy --methods linear,prototypes,knn,lora,vpt,pathotune``: one table with every
method, labelled as plumbing on random weights (tiny backbone, 1 epoch, synthetic tiles: the numbers mean nothing)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy.__main__ import main  # noqa: E402

METHODS = ("linear", "prototypes", "knn", "lora", "vpt", "pathotune")


def test_accuracy_recipe_runs_every_new_method_into_one_table(tmp_path: Path) -> None:
    from pathotune_cli.demo_data import write_demo_tiles

    from testdata import tiny_preset

    tiles = write_demo_tiles(tmp_path / "tiles", per_class=4, size=32, seed=0)
    preset = tmp_path / "tiny-test.yaml"
    data = tiny_preset().model_dump(mode="json")
    data.pop("name")
    preset.write_text(yaml.safe_dump(data))
    out = tmp_path / "acc"
    code = main(["--task", "demo", "--train", str(tiles), "--test", str(tiles), "--backbones", str(preset),
                 "--methods", ",".join((*METHODS, "zeroshot")), "--shots", "2", "--seeds", "1", "--epochs", "1",
                 "--bootstrap", "20", "--precision", "fp32", "--device", "cpu", "--set", "train.batch_size=8",
                 "--out", str(out)])
    assert code == 0
    with (out / "accuracy.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == list(METHODS)  # zeroshot left out: this backbone has no text tower
    assert all(0 <= float(r["balanced_accuracy"]) <= 1 for r in rows)
    report = (out / "ACCURACY.md").read_text()
    assert "random weights, plumbing only" in report
    assert all(f"| {m} |" in report for m in METHODS)


@pytest.mark.parametrize("methods", ["linear,nearest", ""])
def test_accuracy_recipe_refuses_an_unknown_method(methods: str, tmp_path: Path) -> None:
    code = main(["--task", "demo", "--train", str(tmp_path), "--test", str(tmp_path), "--backbones", "tiny-random",
                 "--methods", methods, "--out", str(tmp_path / "acc")])
    assert code == 2

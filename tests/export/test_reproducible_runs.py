"""A tuning run redone from its ``RUN/config.yaml`` gives the same metrics and bit-identical prompts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


def test_rerun_from_config_yaml_reproduces_metrics_and_prompt_tensors(tmp_path: Path) -> None:
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.engine.promptfile import read_prompt_file

    data = write_demo_tiles(tmp_path / "tiles", per_class=6, size=64, seed=3)
    first = runner.invoke(
        app,
        [
            "tune",
            "--preset",
            "demo",
            "--data",
            str(data),
            "--backbone",
            "tiny-random",
            "--method",
            "pathotune",
            "--set",
            "backbone.input_size=64",
            "--precision",
            "fp32",
            "--epochs",
            "2",
            "--seed",
            "7",
            "--out",
            str(tmp_path / "RUN"),
            "--json",
        ],
    )
    assert first.exit_code == 0, first.output
    config = yaml.safe_load((tmp_path / "RUN" / "config.yaml").read_text())
    assert config["seed"] == 7 and config["backbone"]["input_size"] == 64 and config["precision"] == "fp32"
    run_record = json.loads((tmp_path / "RUN" / "run.json").read_text())
    assert {"torch", "timm", "pathotune"} <= set(run_record["versions"]) and run_record["seed"] == 7
    with (tmp_path / "RUN" / "data_manifest.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 24

    second = runner.invoke(
        app,
        [
            "tune",
            "--config",
            str(tmp_path / "RUN" / "config.yaml"),
            "--out",
            str(tmp_path / "RUN2"),
            "--json",
        ],
    )
    assert second.exit_code == 0, second.output

    a, b = (json.loads(r.stdout) for r in (first, second))
    assert a["validation"] == b["validation"]
    assert a["history"] == b["history"]
    assert json.loads((tmp_path / "RUN" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "RUN2" / "metrics.json").read_text()
    )
    one = read_prompt_file(tmp_path / "RUN" / "prompts.safetensors")
    two = read_prompt_file(tmp_path / "RUN2" / "prompts.safetensors")
    assert set(one.tensors) == set(two.tensors)
    for name, tensor in one.tensors.items():
        assert tensor.dtype == two.tensors[name].dtype and tensor.shape == two.tensors[name].shape, name
        assert tensor.numpy().tobytes() == two.tensors[name].numpy().tobytes(), name
    assert one.header.training["config_digest"] == two.header.training["config_digest"]

"""Trust on the first try: no model on random weights unless named, lab defaults set once, `predict SLIDE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.demo_data import write_demo_tiles

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_tiles(tmp_path_factory.mktemp("tiles") / "train", per_class=8, seed=0)


@pytest.fixture(scope="module")
def random_prompts(demo_tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "RUN"
    result = _invoke("tune", "--preset", "demo", "--data", demo_tiles, "--backbone", "tiny-random", "--epochs", 1,
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert "random weights" in result.output  # named, and still said out loud
    return out / "prompts.safetensors"


def test_tune_without_a_backbone_never_trains_on_random_weights(
    kather_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("tune did work before finding that the weights are missing")

    monkeypatch.setattr("pathotune_cli.training.data.discover", no_work)
    monkeypatch.setattr("pathotune_cli.engine.build.load_backbone", no_work)
    result = _invoke("tune", "--preset", "kather2016", "--data", kather_dir, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1, result.output
    assert "weights for backbone 'uni'" in lines[0] and "the kather2016 task's recommended backbone" in lines[0]
    assert "hf download MahmoodLab/UNI pytorch_model.bin" in lines[0] and "--backbone NAME" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_lab_default_backbone_is_used_and_random_weights_are_said(demo_tiles: Path, tmp_path: Path) -> None:
    assert _invoke("config", "set", "backbone", "tiny-random").exit_code == 0
    result = _invoke("tune", "--preset", "demo", "--data", demo_tiles, "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in _lines(result.output) if "random weights" in line]
    assert len(warnings) == 1 and "not for diagnostic use" in warnings[0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["random_weights"] is True and "tiny-random" in (tmp_path / "run" / "config.yaml").read_text()


def test_every_command_on_a_random_weights_model_says_so(
    random_prompts: Path, demo_tiles: Path, tmp_path: Path, data_file
) -> None:
    svs = data_file("slides/cmu-1-small-region.svs")
    runs = {
        "eval": ("eval", random_prompts, "--data", demo_tiles, "--out", tmp_path / "eval", "--bootstrap", 10),
        "predict": ("predict", random_prompts, svs, "--out", tmp_path / "P"),
        "export": ("export", random_prompts, "--format", "torchscript", "--out", tmp_path / "m.ts"),
        "inspect": ("inspect", random_prompts),
    }
    for name, args in runs.items():
        result = _invoke(*args)
        assert result.exit_code == 0, (name, result.output)
        assert sum("random weights" in line for line in _lines(result.output)) >= 1, name
    card = json.loads((tmp_path / "m.ts.card.json").read_text())
    assert card["backbone"]["random_weights"] is True and card["limitations"][0].startswith("RANDOM WEIGHTS")
    doc = json.loads(_invoke("inspect", random_prompts, "--json").stdout)
    assert doc["backbone"]["random_weights"] is True and doc["backbone"]["weight_source"] == "random"


def test_predict_a_slide_without_a_prompt_file_names_both_fixes(tmp_path: Path, data_file) -> None:
    result = _invoke("predict", data_file("slides/cmu-1-small-region.svs"), "--out", tmp_path / "P")
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert len(lines) == 1 and "--prompts" in lines[0] and "pathotune config set prompts FILE" in lines[0]
    assert not (tmp_path / "P").exists()


def test_predict_finds_its_prompts_in_the_option_the_first_argument_or_the_lab_default(
    random_prompts: Path, tmp_path: Path, data_file
) -> None:
    svs = data_file("slides/cmu-1-small-region.svs")
    for label, args in {
        "option": ("--prompts", random_prompts, svs),
        "first argument": (random_prompts, svs),
    }.items():
        result = _invoke("predict", *args, "--out", tmp_path / label, "--json")
        assert result.exit_code == 0, (label, result.output)
        assert json.loads(result.stdout)["prompts"] == str(random_prompts)
    assert _invoke("config", "set", "prompts", random_prompts).exit_code == 0
    result = _invoke("predict", svs, "--out", tmp_path / "D")
    assert result.exit_code == 0, result.output
    for suffix in (".predictions.csv", ".tiles.geojson", ".heatmap.png", ".predict.json"):
        assert (tmp_path / "D" / f"cmu-1-small-region{suffix}").is_file(), suffix
    assert (tmp_path / "D" / "summary.csv").is_file()
    assert _invoke("eval", "--data", tmp_path / "nowhere").exit_code == 2  # eval too takes the lab's prompts


def test_config_keys_and_values_are_checked_before_they_are_kept(random_prompts: Path, tmp_path: Path) -> None:
    cases = {
        ("set", "bakbone", "uni"): "unknown config key 'bakbone'; did you mean 'backbone'?",
        ("set", "backbone", "unii"): "unknown backbone preset 'unii'",
        ("set", "prompts", tmp_path / "missing.safetensors"): "does not exist",
        ("set", "out", random_prompts): "is a file",
        ("get", "colour"): "unknown config key 'colour'",
    }
    for args, message in cases.items():
        result = _invoke("config", *args)
        assert result.exit_code == 2 and len(_lines(result.output)) == 1 and message in result.output, args
    assert _invoke("config", "get", "backbone").exit_code == 1  # not set
    assert _invoke("config", "set", "out", tmp_path / "lab").exit_code == 0
    assert _invoke("config", "set", "backbone", "uni").exit_code == 0
    listed = json.loads(_invoke("config", "list", "--json").stdout)["defaults"]
    assert listed["backbone"]["value"] == "uni" and listed["out"]["value"] == str(tmp_path / "lab")
    assert listed["prompts"]["value"] is None
    assert _invoke("config", "get", "backbone").stdout.strip() == "uni"
    doctor = json.loads(_invoke("doctor", "--json").stdout)
    assert doctor["lab_defaults"]["values"]["backbone"] == "uni"
    assert _invoke("config", "unset", "backbone").exit_code == 0
    assert _invoke("config", "get", "backbone").exit_code == 1


def test_the_lab_output_root_is_where_commands_write_without_out(
    random_prompts: Path, tmp_path: Path, data_file
) -> None:
    assert _invoke("config", "set", "out", tmp_path / "lab").exit_code == 0
    result = _invoke("predict", random_prompts, data_file("slides/cmu-1-small-region.svs"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lab" / "predictions" / "summary.csv").is_file()

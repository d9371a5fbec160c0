"""`pathotune tune` and `pathotune eval` on the real Kather 2016 patches, and their one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    kather = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "patches" / "kather2016-dev"
    if not kather.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real test data {kather} is missing")
        pytest.skip("real data missing")
    out = tmp_path_factory.mktemp("tune") / "RUN"
    result = _invoke(
        "tune", "--preset", "kather2016", "--data", str(kather), "--backbone", "tiny-random",
        "--epochs", "2", "--out", str(out),
    )
    assert result.exit_code == 0, result.output
    return out


def test_tune_writes_prompts_config_history_and_metrics(run_dir: Path) -> None:
    for name in ("prompts.safetensors", "config.yaml", "history.csv", "metrics.json", "run.json",
                 "data_manifest.csv", "confusion_matrix.png", "curves.png", "val_predictions.csv"):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"]["name"] == "kather2016" and config["backbone"]["name"] == "tiny-random"
    assert config["train"]["epochs"] == 2
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["metrics"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa"}
    with (run_dir / "data_manifest.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    assert len(manifest) == 76 and all(len(r["sha256"]) == 64 for r in manifest)


def test_eval_json_prints_metrics_with_confidence_intervals(run_dir: Path, kather_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir / "prompts.safetensors"), "--data", str(kather_dir),
                                 "--out", str(tmp_path / "eval"), "--json", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["n"] == 76
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa"):
        m = doc["metrics"][name]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], name
    assert set(doc["per_class"]) == {"TUMOR", "STROMA", "COMPLEX", "LYMPHO", "DEBRIS", "MUCOSA", "ADIPOSE", "EMPTY"}
    assert len(doc["confusion_matrix"]) == 8
    assert (tmp_path / "eval" / "predictions.csv").is_file()
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()


def test_tune_refuses_to_overwrite_a_finished_run(run_dir: Path, kather_dir: Path) -> None:
    result = _invoke(
        "tune", "--preset", "kather2016", "--data", str(kather_dir), "--backbone", "tiny-random", "--out", str(run_dir),
        "--epochs", "1",
    )
    assert result.exit_code == 2
    assert "already holds a finished run" in result.output


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--preset", "kather2017"], r"unknown task preset 'kather2017'; did you mean 'kather2016'\?"),
        (
            ["--preset", "demo", "--backbone", "tiny-randm"],
            r"unknown backbone preset 'tiny-randm'; did you mean 'tiny-random'",
        ),
        (["--preset", "demo", "--set", "train.lrr=1"], r"unknown key 'train.lrr' \(did you mean 'lr'\?\)"),
        (
            ["--preset", "demo", "--set", "prompt.method=adapter"],
            r"key 'prompt.method' must be one of 'linear', 'vpt', 'pathotune', 'full', 'lora', 'prototypes', 'knn' "
            r"or 'zeroshot'; got 'adapter'",
        ),
        (
            ["--preset", "demo", "--set", "train.epochs=0"],
            r"key 'train.epochs': input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_presets_and_keys_exit_2_with_one_line(args: list[str], pattern: str, tmp_path: Path) -> None:
    import re

    (tmp_path / "d" / "tumor").mkdir(parents=True)
    result = _invoke("tune", *args, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output


def test_user_preset_file_works_where_a_name_does(tmp_path: Path) -> None:
    task = tmp_path / "mytask.yaml"
    task.write_text(yaml.safe_dump({
        "description": "two classes", "classes": [
            {"name": "a", "description": "first"}, {"name": "b", "description": "second"}]}))
    result = _invoke("presets", "show", str(task))
    assert result.exit_code == 0 and "name: mytask" in result.output
    task.write_text("classes:\n  - {name: a, descripton: x}\n")
    result = _invoke("presets", "show", str(task))
    assert result.exit_code == 2
    assert "mytask.yaml: unknown key 'classes.0.descripton' (did you mean 'description'?)" in result.output


def test_eval_on_truncated_or_foreign_prompt_file_exits_2(run_dir: Path, kather_dir: Path, tmp_path: Path) -> None:
    data = (run_dir / "prompts.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 3])
    result = _invoke("eval", str(cut), "--data", str(kather_dir))
    assert result.exit_code == 2 and "not a readable prompt file" in result.output
    not_prompts = tmp_path / "x.safetensors"
    not_prompts.write_text("hello")
    result = _invoke("eval", str(not_prompts), "--data", str(kather_dir))
    assert result.exit_code == 2 and "error:" in result.output


def test_eval_refuses_prompts_from_another_backbone_in_one_line(
    run_dir: Path, kather_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    other = load_backbone(load_backbone_preset("tiny-random"))
    save_file({k: v * 1.01 for k, v in other.vit.state_dict().items()}, str(tmp_path / "other.safetensors"))
    result = _invoke("eval", str(run_dir / "prompts.safetensors"), "--data", str(kather_dir),
                     "--weights", str(tmp_path / "other.safetensors"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "was tuned on backbone 'tiny-random'" in lines[0] and "other.safetensors" in lines[0]

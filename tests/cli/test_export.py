"""`pathotune export`: a checked model and its card; bad input: one line, exit 2; failed check: exit 1."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from testdata import tiny_preset

runner = CliRunner()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``pathotune`` prompt file on a tiny random backbone (2 blocks, width 64, 64 px)."""
    import torch

    from pathotune_cli.config import load_task_preset
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.engine import build_prompted_model, prompt_header, save_prompt_file

    preset = tiny_preset()
    task = load_task_preset("demo")
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method="pathotune"))
    with torch.no_grad():  # non-trivial prompts, as after training
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    meta = prompt_header(
        built,
        task,
        preset,
        metrics={"split": "validation", "accuracy": 0.5},
        training={"seed": 0, "class_counts": {"train": {c: 3 for c in task.class_names}}},
    )
    folder = tmp_path_factory.mktemp("cli-export")
    return save_prompt_file(folder / "prompts.safetensors", built.model.trained_state(), meta)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_export_torchscript_json_writes_model_and_card_beside_the_prompts(
    prompts: Path, kather_dir: Path
) -> None:
    result = runner.invoke(
        app, ["export", str(prompts), "--format", "torchscript", "--check-data", str(kather_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert Path(doc["export"]) == prompts.parent / "model.ts" and Path(doc["export"]).is_file()
    assert doc["check"]["max_abs_diff"] <= 1e-4 and doc["check"]["real_tiles"] == 32
    assert doc["input"]["shape"] == ["batch", 3, 64, 64] and doc["classes"] == [
        "tumor",
        "stroma",
        "lymphocytes",
        "adipose",
    ]
    assert Path(doc["card_json"]) == prompts.parent / "model.ts.card.json"
    card = json.loads(Path(doc["card_json"]).read_text())
    assert card["training"]["class_counts"]["train"]["tumor"] == 3 and card["evaluation"] is None
    assert (prompts.parent / "model.ts.card.md").is_file()


def test_export_onnx_prints_the_check_in_a_table(prompts: Path, tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "tiny.onnx"
    result = runner.invoke(app, ["export", str(prompts), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "deploy" / "tiny.onnx.card.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    flat = " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬╈]", " ", result.output).split())
    assert re.search(r"max \|diff\| \d\.\d\de-\d\d on 8 tiles \(0 real\), uint8 and float32, allowed 1e-04", flat), flat


def test_export_failing_check_exits_1_and_leaves_no_export(
    prompts: Path, tmp_path: Path, monkeypatch
) -> None:
    import pathotune_cli.engine.export_run as engine_export

    original = engine_export.reference_probabilities
    monkeypatch.setattr(engine_export, "reference_probabilities", lambda *a, **k: original(*a, **k) + 1e-3)
    out = tmp_path / "bad.ts"
    result = runner.invoke(app, ["export", str(prompts), "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    line = lines[-1]  # progress lines come first; the failure is one line, the last
    assert sum(ln.startswith("error: ") for ln in lines) == 1 and line.startswith("error: ")
    assert re.search(
        r"TorchScript and PyTorch probabilities differ by up to 1\.\d+e-03 on 8 tiles \(allowed 1e-04\)", line
    )
    assert not out.exists() and not (tmp_path / "bad.ts.card.json").exists()


def test_export_unknown_format_exits_2_with_one_line(prompts: Path) -> None:
    result = runner.invoke(app, ["export", str(prompts), "--format", "tflite"])
    assert result.exit_code == 2
    assert (
        "unknown export format 'tflite'; use one of --format onnx, --format torchscript, --format pt2, "
        "--format wsinfer" in _one_error_line(result)
    )


def test_export_without_onnxruntime_names_the_pip_install(prompts: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = runner.invoke(app, ["export", str(prompts), "--format", "onnx"])
    assert result.exit_code == 2
    assert (
        "needs onnxruntime, which is not installed; pip install 'pathotune-cli[export]'"
        in _one_error_line(result)
    )


def test_export_truncated_prompt_file_exits_2_with_one_line(prompts: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(prompts.read_bytes()[:1000])
    result = runner.invoke(app, ["export", str(cut), "--format", "torchscript"])
    assert result.exit_code == 2
    assert "not a readable prompt file" in _one_error_line(result)


def test_export_check_data_that_is_not_a_folder_exits_2(prompts: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", str(prompts), "--format", "torchscript", "--check-data", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2
    assert "is not a folder" in _one_error_line(result)


def test_export_pt2_json_writes_a_torch_export_program_checked_both_ways(prompts: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt2"
    result = runner.invoke(app, ["export", str(prompts), "--format", "pt2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == "pt2" and out.is_file() and doc["input"]["inputs"] == ["tiles", "tiles_float"]
    assert doc["check"]["max_abs_diff_uint8"] <= 1e-4 and doc["check"]["max_abs_diff_float32"] <= 1e-4
    assert "float32 0-255 pixels" in doc["check"]["refuses"] and "4 channels" in doc["check"]["refuses"]
    assert doc["exporter"].startswith("torch.export") and (tmp_path / "model.pt2.card.md").is_file()


def test_export_check_wsinfer_needs_the_wsinfer_format_and_exits_2(prompts: Path, tmp_path: Path) -> None:
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"x")
    result = runner.invoke(app, ["export", str(prompts), "--format", "torchscript", "--check-wsinfer", str(slide)])
    assert result.exit_code == 2
    assert "--check-wsinfer checks the WSInfer model folder; add --format wsinfer" in _one_error_line(result)


def test_export_wsinfer_to_a_file_exits_2(prompts: Path, tmp_path: Path) -> None:
    (tmp_path / "model.ts").write_bytes(b"x")
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--out", str(tmp_path / "model.ts")])
    assert result.exit_code == 2
    assert "--format wsinfer writes a folder" in _one_error_line(result)


def test_export_check_wsinfer_without_wsinfer_says_how_to_get_it(
    prompts: Path, tmp_path: Path, monkeypatch
) -> None:
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"x")
    monkeypatch.setenv("PATH", str(tmp_path))  # no wsinfer here
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--check-wsinfer", str(slide)])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "--check-wsinfer needs WSInfer, and no `wsinfer` command is on PATH" in line
    assert "pip install wsinfer==0.6.1 'zarr<3'" in line and "--wsinfer /path/to/bin/wsinfer" in line
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--check-wsinfer", str(slide),
                                 "--wsinfer", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not an executable" in _one_error_line(result)


def test_export_check_wsinfer_that_fails_offline_exits_1_naming_the_registry(
    prompts: Path, tmp_path: Path
) -> None:
    from pathotune_cli.runs.demo import write_demo_slide

    fake = tmp_path / "wsinfer"
    fake.write_text("#!/bin/sh\necho 'huggingface_hub.errors.LocalEntryNotFoundError: cannot find the file' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "ws"
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--out", str(out), "--check-wsinfer",
                                 str(write_demo_slide(tmp_path / "demo.tiff")), "--wsinfer", str(fake)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "WSInfer failed on demo.tiff (exit 1): huggingface_hub.errors.LocalEntryNotFound" in (
        lines[0]), result.output
    assert "~/.wsinfer-zoo/wsinfer-zoo-registry.json" in lines[0]
    assert not (out / "torchscript_model.pt").exists() and not (out / "config.json").exists()

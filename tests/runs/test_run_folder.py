"""Nothing half-written where it looks finished: a failed `tune` says so and holds no final artefact; `eval` and
`export` leave all their files or none; a folder with a run in it is never silently started over."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.files import TEMP_MARK

TUNE = ["tune", "--preset", "demo", "--backbone", "tiny-random", "--epochs", "1", "--precision", "fp32",
        "--set", "backbone.input_size=64", "--set", "train.batch_size=8"]
FINAL = ("prompts.safetensors", "history.csv", "metrics.json", "val_predictions.csv", "confusion_matrix.png",
         "curves.png")


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _status(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_MARK in p.name]


def test_a_full_disk_at_the_prompt_file_leaves_a_failed_run_that_resumes(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def full_at_the_prompt_file(tensors: object, filename: str, metadata: object = None) -> None:
        if "prompts" in Path(filename).name:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_at_the_prompt_file)
    run = tmp_path / "R"
    result = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device holding" in errors[0]
    assert str(run / "prompts.safetensors") in errors[0] and "internal error" not in result.output
    record = _status(run)
    assert record["status"] == "failed" and "no space left" in record["error"]
    assert [name for name in FINAL if (run / name).exists()] == [] and _temporaries(run) == []
    assert (run / "checkpoint.safetensors").is_file()  # what --resume continues from

    monkeypatch.undo()
    again = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run)
    assert again.exit_code == 2 and "holds an unfinished run (failed: no space left" in again.output
    resumed = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert _status(run)["status"] == "finished" and all((run / name).exists() for name in FINAL)


def test_force_starts_again_and_removes_only_the_runs_own_files(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "R"
    shutil.copytree(tiny_run, run)
    (run / "notes.txt").write_text("the lab's own file")
    before = (run / "prompts.safetensors").stat().st_mtime_ns
    result = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run, "--force", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert (run / "prompts.safetensors").stat().st_mtime_ns != before and (run / "notes.txt").is_file()
    assert _status(run)["status"] == "finished" and _status(run)["seed"] == 3


def test_a_folder_in_use_by_a_live_run_is_refused_even_with_force(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "R"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "running", "host": socket.gethostname(),
                                              "pid": os.getppid()}))
    result = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run, "--force")
    assert result.exit_code == 2 and f"is in use by a tuning run still going (pid {os.getppid()}" in result.output


def test_a_killed_run_without_a_record_of_its_death_is_unfinished(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "R"
    shutil.copytree(tiny_run, run)
    (run / "prompts.safetensors").unlink()
    record = _status(run)
    record.update(status="running", pid=2**22 + 17)  # a pid no process has
    (run / "run.json").write_text(json.dumps(record))
    result = _invoke(*TUNE, "--data", tiny_run.parent / "tiles", "--out", run)
    assert result.exit_code == 2 and "holds an unfinished run (running)" in result.output


def test_a_refused_run_leaves_no_empty_folder(tmp_path: Path) -> None:
    result = _invoke(*TUNE, "--data", tmp_path / "nowhere", "--out", tmp_path / "R")
    assert result.exit_code == 2 and not (tmp_path / "R").exists()


def test_eval_on_a_full_disk_leaves_none_of_its_files(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.training.plots as plots

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "save_confusion_matrix", full)
    out = tmp_path / "E"
    result = _invoke("eval", tiny_run / "prompts.safetensors", "--data", tiny_run.parent / "tiles", "--out", out,
                     "--bootstrap", "0")
    assert result.exit_code == 1 and "no space left on the device" in result.output
    assert sorted(p.name for p in out.iterdir()) == []


def test_export_whose_card_fails_leaves_no_export(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.runs.export as export

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.ts.card.json"))

    monkeypatch.setattr(export, "_write_card", full)
    result = _invoke("export", tiny_run / "prompts.safetensors", "--format", "torchscript", "--out", tmp_path / "m.ts")
    assert result.exit_code == 1 and "no space left on the device holding" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_an_output_folder_that_cannot_be_made_is_found_before_any_inference(
    command: str, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.engine as engine

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded the model before finding that --out cannot be made")

    monkeypatch.setattr(engine, "load_prompted_model", never)
    (tmp_path / "afile").write_text("x")
    inputs = ["--data", tiny_run.parent / "tiles"] if command == "eval" else [tiny_run.parent / "tiles" / "tumor"]
    result = _invoke(command, tiny_run / "prompts.safetensors", *inputs, "--out", tmp_path / "afile" / "out")
    assert result.exit_code == 2 and "a part of this path is a file, not a folder" in result.output

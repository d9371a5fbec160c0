"""A killed run resumes to the same weights; instance features are computed once per image; text once per task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.demo_data import write_demo_tiles
from pathotune_cli.engine.promptfile import read_prompt_file
from pathotune_cli.events import EpochDone
from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run


@pytest.fixture(scope="module")
def demo_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_tiles(tmp_path_factory.mktemp("tiles"), per_class=6, size=64, seed=3)


def _config(data: Path, out: Path, epochs: int = 3):
    return resolve_config(TuneOptions(
        preset="demo", data=str(data), backbone="tiny-random", out=str(out), epochs=epochs, seed=5,
        precision="fp32", sets=["train.batch_size=8", "train.patience=null", "backbone.input_size=64"],
    ))


class _Killed(Exception):
    pass


def test_killed_run_resumed_ends_with_same_weights(demo_tiles: Path, tmp_path: Path) -> None:
    straight = tune_run(_config(demo_tiles, tmp_path / "straight"))

    def kill_after_first_epoch(event: object) -> None:
        if isinstance(event, EpochDone) and event.row["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        tune_run(_config(demo_tiles, tmp_path / "killed"), report=kill_after_first_epoch)
    assert not (tmp_path / "killed" / "prompts.safetensors").exists()  # nothing half-finished looks finished
    resumed = tune_run(_config(demo_tiles, tmp_path / "killed"), resume=True)
    assert resumed.resumed_from == 1
    a = read_prompt_file(straight.prompts).tensors
    b = read_prompt_file(resumed.prompts).tensors
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]


def test_resume_refuses_a_checkpoint_of_other_settings(demo_tiles: Path, tmp_path: Path) -> None:
    from pathotune_cli.errors import BadInput

    def kill(event: object) -> None:
        if isinstance(event, EpochDone):
            raise _Killed

    with pytest.raises(_Killed):
        tune_run(_config(demo_tiles, tmp_path / "run"), report=kill)
    other = _config(demo_tiles, tmp_path / "run", epochs=5)
    with pytest.raises(BadInput, match=r"was started with other settings \(changed: train.epochs\)"):
        tune_run(other, resume=True)


def test_instance_encoder_runs_once_per_image_per_run(demo_tiles: Path, tmp_path: Path) -> None:
    summary = tune_run(_config(demo_tiles, tmp_path / "run", epochs=3))
    # once for every training and validation tile, not once per epoch; the final report reuses the cache
    assert summary.instance_images_encoded == summary.train_images + summary.val_images


def test_text_encoder_runs_once_per_task(demo_tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathotune_cli.engine import build, text

    calls: list[list[str]] = []
    real = text.encode_texts

    def counting(texts, encoder, backbone=None):
        calls.append(list(texts))
        return real(texts, encoder, backbone)

    monkeypatch.setattr(build, "encode_texts", counting)
    tune_run(_config(demo_tiles, tmp_path / "run", epochs=3))
    assert len(calls) == 1

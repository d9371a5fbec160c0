"""kill -9 in the middle of `tune`, `predict` and `tile --save-tiles`, then `--resume`: the same results as a run
that was never stopped, byte for byte (tensors with torch.equal), and no temporary left in any output folder.

Each command runs in a subprocess that is killed with SIGKILL at a point the test waits for (a file appearing),
polled for, never a fixed sleep.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.files import TEMP_MARK

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
POLL_SECONDS = 0.005
DEADLINE_SECONDS = 600


def kill_when(args: list[object], ready: Callable[[], bool], log: Path) -> None:
    """Run ``pathotune ARGS`` in a subprocess and SIGKILL it as soon as ``ready()`` is true."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "pathotune_cli", *map(str, args)], stdout=handle,
                                stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + DEADLINE_SECONDS
        try:
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(f"the command ended (exit {proc.returncode}) before the point it is killed at:\n"
                                f"{log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail("the kill point never came")
                time.sleep(POLL_SECONDS)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if TEMP_MARK in p.name)


def invoke(*args: object) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def test_tune_killed_after_an_epoch_resumes_to_the_same_prompts(tiny_run: Path, tmp_path: Path) -> None:
    import torch

    from pathotune_cli.engine.promptfile import read_prompt_file

    args = ["tune", "--preset", "demo", "--backbone", "tiny-random", "--data", tiny_run.parent / "tiles",
            "--epochs", "4", "--seed", "2", "--precision", "fp32", "--set", "backbone.input_size=64",
            "--set", "train.batch_size=4", "--set", "train.patience=null"]
    invoke(*args, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"
    kill_when([*args, "--out", killed], lambda: (killed / "checkpoint.safetensors").exists(), tmp_path / "log")
    assert not (killed / "prompts.safetensors").exists()  # nothing that looks finished
    invoke(*args, "--out", killed, "--resume")
    a, b = read_prompt_file(tmp_path / "straight" / "prompts.safetensors"), read_prompt_file(
        killed / "prompts.safetensors")
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    drop = {"created"}
    assert {k: v for k, v in a.header.to_json().items() if k not in drop} == {
        k: v for k, v in b.header.to_json().items() if k not in drop}
    for name in ("history.csv", "val_predictions.csv"):
        assert (tmp_path / "straight" / name).read_bytes() == (killed / name).read_bytes(), name
    assert temporaries(killed) == []


def _two_slides(folder: Path, data_file) -> Path:
    folder.mkdir()
    for name in ("a.svs", "b.svs"):
        shutil.copy(data_file("slides/cmu-1-small-region.svs"), folder / name)
    return folder


def _without(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in columns} for row in csv.DictReader(handle)]


def test_predict_killed_after_a_slide_resumes_to_the_same_files(tiny_run: Path, tmp_path: Path, data_file) -> None:
    slides = _two_slides(tmp_path / "slides", data_file)
    prompts = tiny_run / "prompts.safetensors"
    invoke("predict", prompts, slides, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"
    kill_when(["predict", prompts, slides, "--out", killed], lambda: (killed / "a.predict.json").exists(),
              tmp_path / "log")
    assert not (killed / "b.predictions.csv").exists() or (killed / "b.predict.json").exists()
    invoke("predict", prompts, slides, "--out", killed, "--resume")
    for stem in ("a", "b"):
        for suffix in (".predictions.csv", ".tiles.geojson", ".heatmap.png"):
            name = stem + suffix
            assert (tmp_path / "straight" / name).read_bytes() == (killed / name).read_bytes(), name
    timing = ("seconds", "resume")
    assert _without(tmp_path / "straight" / "summary.csv", timing) == _without(killed / "summary.csv", timing)
    assert temporaries(killed) == []


def test_tile_killed_while_saving_tiles_resumes_to_the_same_tiles(tmp_path: Path, data_file) -> None:
    import h5py
    import numpy as np

    slides = _two_slides(tmp_path / "slides", data_file)
    args = ["tile", slides, "--mpp", "0.5", "--tile-size", "64", "--save-tiles", "png", "--workers", "1"]
    invoke(*args, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"

    def saving_tiles() -> bool:  # the first slide's tile folder exists under its temporary name, with tiles in it
        return killed.is_dir() and any(p.is_dir() and TEMP_MARK in p.name and any(p.iterdir())
                                       for p in killed.iterdir())

    kill_when([*args, "--out", killed], saving_tiles, tmp_path / "log")
    assert temporaries(killed)  # the kill left a half-saved tile folder behind
    invoke(*args, "--out", killed, "--resume")
    assert temporaries(killed) == []
    for stem in ("a", "b"):
        with h5py.File(tmp_path / "straight" / f"{stem}.h5") as x, h5py.File(killed / f"{stem}.h5") as y:
            assert np.array_equal(x["coords"][:], y["coords"][:])
            same = {k: np.array_equal(v, y["coords"].attrs[k], equal_nan=np.asarray(v).dtype.kind == "f")
                    for k, v in x["coords"].attrs.items()}
            assert same.keys() == set(y["coords"].attrs) and all(same.values()), same
        for suffix in (".tissue.geojson", ".thumb.png"):
            assert (tmp_path / "straight" / f"{stem}{suffix}").read_bytes() == (killed / f"{stem}{suffix}").read_bytes()
        tiles_a = sorted((tmp_path / "straight" / f"{stem}_tiles").iterdir())
        tiles_b = sorted((killed / f"{stem}_tiles").iterdir())
        assert [p.name for p in tiles_a] == [p.name for p in tiles_b] and len(tiles_a) > 100
        assert all(p.read_bytes() == q.read_bytes() for p, q in zip(tiles_a, tiles_b, strict=True))
    timing = ("seconds", "resume")
    assert _without(tmp_path / "straight" / "manifest.csv", timing) == _without(killed / "manifest.csv", timing)

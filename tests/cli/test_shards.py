"""Per-slide commands on a cluster: shards, SLURM array tasks, lock files, `merge` and `--devices`."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.demo_data import write_demo_tiles
from pathotune_cli.runs.demo import write_demo_slide
from pathotune_cli.runs.slide_level.demo import write_planted_slides
from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
OUTPUTS = (".predictions.csv", ".tiles.geojson", ".heatmap.png", ".predict.json")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shard-model")
    data = write_demo_tiles(root / "tiles", per_class=8, seed=0)
    config = resolve_config(TuneOptions(preset="demo", data=data, backbone="tiny-random", out=root / "run",
                                        epochs=1, seed=0))
    return tune_run(config).prompts


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small generated slides, s00 ... s04."""
    folder = tmp_path_factory.mktemp("slides")
    write_planted_slides(folder, count=5, size=(448, 336))
    return folder


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _predict(prompts: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pathotune_cli", "predict", str(prompts), *args, "--json"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".lock") or ".tmp-" in p.name)


@pytest.mark.slow
def test_two_shards_started_together_write_every_slide_once(prompts: Path, slides: Path, tmp_path: Path) -> None:
    out = tmp_path / "P"
    shards = [subprocess.Popen(_predict(prompts, str(slides), "--out", str(out), "--shard", f"{i}/2"),
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    results = [shard.communicate(timeout=600) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], [err[-2000:] for _, err in results]
    done = [[row["slide"] for row in json.loads(stdout)["slides"]] for stdout, _ in results]
    assert done == [["s00.tiff", "s02.tiff", "s04.tiff"], ["s01.tiff", "s03.tiff"]]  # sorted, every 2nd from I
    for i in range(5):
        assert all((out / f"s{i:02d}{suffix}").is_file() for suffix in OUTPUTS)
    summary = _rows(out / "summary.csv")
    assert [r["slide"] for r in summary] == [f"s{i:02d}.tiff" for i in range(5)]
    assert {r["status"] for r in summary} == {"ok"}
    for i in range(2):
        record = json.loads((out / f"run-{i}-of-2.json").read_text())
        assert record["status"] == "finished" and record["shard"]["index"] == i and len(record["all_slides"]) == 5
    assert not (out / "run.json").exists() and _leftovers(out) == []


def test_a_slurm_array_task_takes_only_its_share(prompts: Path, slides: Path, tmp_path: Path) -> None:
    out = tmp_path / "P"
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    result = runner.invoke(app, ["predict", str(prompts), str(slides), "--out", str(out), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [r["slide"] for r in json.loads(result.stdout)["slides"]] == ["s01.tiff", "s03.tiff"]
    assert "shard 1/2 (SLURM_ARRAY_TASK_ID): 2 of 5 slides" in result.stderr
    assert sorted(p.name for p in out.glob("*.predict.json")) == ["s01.predict.json", "s03.predict.json"]
    summary = _rows(out / "summary.csv")  # the other task's share too, pending: it never looks final when short
    assert [(r["slide"], r["status"]) for r in summary] == [
        ("s00.tiff", "pending"), ("s01.tiff", "ok"), ("s02.tiff", "pending"), ("s03.tiff", "ok"),
        ("s04.tiff", "pending")]
    assert json.loads((out / "run-1-of-2.json").read_text())["shard"]["source"] == "SLURM_ARRAY_TASK_ID"
    merged = runner.invoke(app, ["merge", str(out), "--json"])
    assert merged.exit_code == 0, merged.output
    count = json.loads(merged.stdout)["commands"][0]
    assert (count["command"], count["ok"], count["failed"]) == ("predict", 2, 0)
    assert count["missing"] == ["s00", "s02", "s04"]  # the other task's share, listed by this task's run record
    assert [r["status"] for r in _rows(out / "summary.csv")].count("pending") == 3
    shown = runner.invoke(app, ["merge", str(out)])
    assert shown.exit_code == 0 and "predict: pending (listed by a run, no record yet" in shown.stderr, shown.output


def test_sigterm_releases_the_slide_lock_and_leaves_no_temporaries(prompts: Path, slides: Path,
                                                                   tmp_path: Path) -> None:
    """A SLURM time limit sends SIGTERM: the slide being worked on is given back at once, not after a timeout."""
    folder = tmp_path / "slides"
    folder.mkdir()
    write_demo_slide(folder / "s99.tiff")
    out = tmp_path / "P"
    lock = out / "s99.predict.lock"
    proc = subprocess.Popen(_predict(prompts, str(folder), "--out", str(out)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not lock.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the slide finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert "error: stopped by SIGTERM (a job's time limit?); finished outputs are kept" in err
    assert not lock.exists() and _leftovers(out) == []
    assert not (out / "s99.predict.json").exists()


@pytest.mark.slow
def test_a_killed_lock_holder_does_not_block_the_rerun_which_redoes_only_its_slide(
    prompts: Path, slides: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    for path in sorted(slides.glob("*.tiff")):
        (folder / path.name).write_bytes(path.read_bytes())
    write_demo_slide(folder / "s99.tiff")  # last in order, and large enough to be caught while it is predicted
    out = tmp_path / "P"
    lock = out / "s99.predict.lock"
    proc = subprocess.Popen(_predict(prompts, str(folder), "--out", str(out)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not lock.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists(), "the process finished before it could be killed"
    assert json.loads(lock.read_text())["pid"] == proc.pid
    assert not (out / "s99.predict.json").exists()
    result = runner.invoke(app, ["predict", str(prompts), str(folder), "--out", str(out), "--resume", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["slide"]: r for r in json.loads(result.stdout)["slides"]}
    assert [s for s, r in rows.items() if r["resume"] != "kept"] == ["s99.tiff"]
    assert rows["s99.tiff"]["status"] == "ok"
    assert "took over the lock of host" in result.stderr and f"its process (pid {proc.pid}) is gone" in result.stderr
    assert len(_rows(out / "summary.csv")) == 6 and _leftovers(out) == []


def test_a_slide_a_live_process_holds_is_left_to_it(prompts: Path, slides: Path, tmp_path: Path) -> None:
    from pathotune_cli.runs.per_slide.locks import acquire, lock_path, release

    out = tmp_path / "P"
    out.mkdir()
    held = lock_path(out, "s02", "predict")
    assert acquire(held).held  # this test process is the live owner
    try:
        result = runner.invoke(app, ["predict", str(prompts), str(slides), "--out", str(out), "--json"])
    finally:
        release(held)
    assert result.exit_code == 0, result.output
    rows = {r["slide"]: r for r in json.loads(result.stdout)["slides"]}
    assert rows["s02.tiff"]["status"] == "locked" and f"pid {os.getpid()}" in rows["s02.tiff"]["error"]
    assert f"warning: s02.tiff: in progress in another process (host {socket.gethostname()}, pid" in result.stderr
    assert not (out / "s02.predict.json").exists()
    summary = _rows(out / "summary.csv")  # still held when the summary was rebuilt: in progress, by whom
    assert [r["status"] for r in summary] == ["ok", "ok", "in progress", "ok", "ok"]
    assert f"pid {os.getpid()}" in summary[2]["error"]
    merged = runner.invoke(app, ["merge", str(out), "--json"])  # the holder is done with it: pending now
    assert merged.exit_code == 0, merged.output
    assert [r["status"] for r in _rows(out / "summary.csv")] == ["ok", "ok", "pending", "ok", "ok"]


@pytest.mark.slow
def test_devices_cpu_cpu_runs_two_workers_as_shards_into_one_folder(prompts: Path, slides: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "P"
    result = runner.invoke(app, ["predict", str(prompts), str(slides), "--out", str(out), "--devices", "cpu,cpu",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert [r["slide"] for r in json.loads(result.stdout)["slides"]] == [f"s{i:02d}.tiff" for i in range(5)]
    assert "shard 0/2 (--devices): 3 of 5 slides" in result.stderr
    assert "shard 1/2 (--devices): 2 of 5 slides" in result.stderr
    assert len(_rows(out / "summary.csv")) == 5
    assert sorted(p.name for p in out.glob("run*.json")) == ["run-0-of-2.json", "run-1-of-2.json"]
    assert _leftovers(out) == []


def test_tile_and_features_shards_share_one_folder_and_one_manifest(prompts: Path, slides: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "T"
    for i in range(2):
        result = runner.invoke(app, ["tile", str(slides), "--out", str(out), "--tile-size", "112", "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
    assert [Path(r["slide"]).name for r in _rows(out / "manifest.csv")] == [f"s{i:02d}.tiff" for i in range(5)]
    features = tmp_path / "F"
    result = runner.invoke(app, ["features", str(slides), "--prompts", str(prompts), "--out", str(features),
                                 "--shard", "1/3", "--json"])
    assert result.exit_code == 0, result.output
    assert [Path(r["slide"]).name for r in json.loads(result.stdout)["rows"]] == ["s01.tiff", "s04.tiff"]
    assert sorted(p.name for p in features.glob("*.h5")) == ["s01.h5", "s04.h5"]


def test_bad_shard_and_devices_get_one_line(prompts: Path, slides: Path, tmp_path: Path) -> None:
    for args, message in ((["--shard", "2/2"], "is not I/N with 0 <= I < N"),
                          (["--devices", "gpu0"], "'gpu0' is not a device"),
                          (["--devices", "cpu,cpu", "--device", "cpu"], "leave out --device")):
        result = runner.invoke(app, ["predict", str(prompts), str(slides), "--out", str(tmp_path / "P"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["merge", str(tmp_path)])
    assert result.exit_code == 2 and "holds no per-slide records" in result.output

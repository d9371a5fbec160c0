"""``python -m benchmarks.accuracy`` on a tiny grid: the CSV and report hold every run, a killed grid resumes
without redoing finished cells, and the paired difference to linear probing equals a numpy reference.

Tiny backbone (2 blocks, 64 px), 1 epoch, 16 synthetic tiles: the numbers mean nothing, the plumbing is checked.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy.__main__ import main  # noqa: E402
from benchmarks.accuracy.cells import finished, read_record  # noqa: E402

CELLS = 10  # linear + pathotune + its arms TVP, TVP+TTP, TVP+IVP; 1 shot count; 2 seeds


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Synthetic demo tiles and a tiny random backbone preset file."""
    from pathotune_cli.demo_data import write_demo_tiles

    from testdata import tiny_preset

    root = tmp_path_factory.mktemp("recipe")
    tiles = write_demo_tiles(root / "tiles", per_class=4, size=32, seed=0)
    preset = root / "tiny-test.yaml"
    data = tiny_preset().model_dump(mode="json")
    data.pop("name")
    preset.write_text(yaml.safe_dump(data))
    return tiles, preset


def _args(tiles: Path, preset: Path, out: Path) -> list[str]:
    return ["--task", "demo", "--train", str(tiles), "--test", str(tiles), "--backbones", str(preset),
            "--methods", "linear,pathotune", "--ablate", "tvp,ttp,ivp", "--shots", "2", "--seeds", "2",
            "--epochs", "1", "--bootstrap", "50", "--precision", "fp32", "--device", "cpu",
            "--set", "train.batch_size=8", "--out", str(out)]


@pytest.fixture(scope="module")
def grid(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The grid killed after its 4th tuning run, then resumed, then run a third time; tune calls counted."""
    from pathotune_cli.runs import tune as tune_module

    out = tmp_path_factory.mktemp("grid") / "acc"
    real = tune_module.tune_run
    calls: list[int] = []

    def killed_after_fourth(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # the 4th cell dies after tuning, before its evaluation
            raise KeyboardInterrupt
        return result

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and the test shares the cores
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tune_module, "tune_run", killed_after_fourth)
            with pytest.raises(KeyboardInterrupt):
                main(_args(*inputs, out))
            first = len(calls)
            mp.setattr(tune_module, "tune_run", counted)
            calls.clear()
            code = main(_args(*inputs, out))
            second = len(calls)
            calls.clear()
            assert main(_args(*inputs, out)) == 0
            third = len(calls)
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "code": code, "tune_calls": (first, second, third)}


def test_killed_grid_resumes_without_redoing_finished_cells(grid: dict) -> None:
    assert grid["code"] == 0
    # 4 tuned before the kill, 3 of them finished: the resumed grid tunes the killed cell and the 6 never started
    assert grid["tune_calls"] == (4, CELLS - 3, 0)


def test_csv_has_one_row_per_run_with_intervals_parameters_and_time(grid: dict) -> None:
    with (grid["out"] / "accuracy.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == CELLS
    assert {(r["method"], r["ablation"]) for r in rows} == {
        ("linear", ""), ("pathotune", "tvp"), ("pathotune", "tvp+ttp"), ("pathotune", "tvp+ivp"),
        ("pathotune", "tvp+ttp+ivp")}
    for row in rows:
        assert row["backbone"] == "tiny-test" and row["shots"] == "2" and row["seed"] in ("0", "1")
        for metric in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "cohen_kappa"):
            low, value, high = (float(row[f"{metric}{s}"]) for s in ("_ci_low", "", "_ci_high"))
            assert low <= value + 1e-12 and value <= high + 1e-12
        assert int(row["trainable_parameters"]) > 0 and float(row["tuning_seconds"]) > 0
        assert row["random_weights"] == "True" and row["test_tiles"] == "16"
        has_delta = row["delta_balanced_accuracy_vs_linear"] != ""
        assert has_delta == (row["method"] != "linear")
    arms = {r["ablation"]: int(r["trainable_parameters"]) for r in rows if r["seed"] == "0"}
    assert arms["tvp"] < arms["tvp+ttp"] < arms["tvp+ttp+ivp"] and arms["tvp"] < arms["tvp+ivp"]


def test_report_names_random_weights_overlap_and_every_variant(grid: dict) -> None:
    text = (grid["out"] / "ACCURACY.md").read_text()
    assert "random weights, plumbing only: checks the recipe, says nothing about the methods" in text
    assert "**16 of the 16 test tiles are also training tiles**" in text
    for title in ("| linear |", "| pathotune (TVP) |", "| pathotune (TVP+TTP) |", "| pathotune (TVP+IVP) |",
                  "| pathotune |"):
        assert title in text
    png = grid["out"] / "curve-tiny-test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _predictions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    classes = json.loads((folder / "eval" / "metrics.json").read_text())["classes"]
    with (folder / "eval" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    y = np.array([classes.index(r["label"]) for r in rows])
    return y, np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))


def test_paired_difference_to_linear_matches_numpy_and_scikit_learn(grid: dict) -> None:
    runs = grid["out"] / "runs" / "tiny-test"
    y, _ = _predictions(runs / "linear" / "shots-2" / "seed-0")
    linear = [_predictions(runs / "linear" / "shots-2" / f"seed-{s}")[1].argmax(1) for s in (0, 1)]
    ours = [_predictions(runs / "pathotune" / "shots-2" / f"seed-{s}")[1].argmax(1) for s in (0, 1)]

    def diff(idx: np.ndarray) -> float:  # one resample of tile indices, applied to both methods and both seeds
        return float(np.mean([_balanced_accuracy(y[idx], b[idx]) - _balanced_accuracy(y[idx], a[idx])
                              for a, b in zip(linear, ours, strict=True)]))

    rng = np.random.default_rng(0)
    draws = [diff(rng.integers(0, len(y), size=len(y))) for _ in range(50)]
    value, (low, high) = diff(np.arange(len(y))), np.percentile(draws, [2.5, 97.5])
    row = next(line for line in (grid["out"] / "ACCURACY.md").read_text().splitlines()
               if line.startswith("| 2 | pathotune |"))
    assert f"{value:+.3f} [{low:+.3f}, {high:+.3f}]" in row

    with (grid["out"] / "accuracy.csv").open() as handle:
        seed0 = next(r for r in csv.DictReader(handle)
                     if r["method"] == "pathotune" and r["ablation"] == "tvp+ttp+ivp" and r["seed"] == "0")
    one = _balanced_accuracy(y, ours[0]) - _balanced_accuracy(y, linear[0])
    assert float(seed0["delta_balanced_accuracy_vs_linear"]) == pytest.approx(one, abs=1e-12)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    expected = sklearn_metrics.balanced_accuracy_score(y, ours[0]) - sklearn_metrics.balanced_accuracy_score(
        y, linear[0])
    assert float(seed0["delta_balanced_accuracy_vs_linear"]) == pytest.approx(expected, abs=1e-12)


def test_list_shows_every_cell_kept_and_runs_nothing(grid: dict, inputs, capsys) -> None:
    assert main(_args(*inputs, grid["out"]) + ["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == CELLS and all(line.split()[0] == "kept" for line in lines)


def test_cell_with_other_settings_is_not_finished(grid: dict) -> None:
    folder = grid["out"] / "runs" / "tiny-test" / "linear" / "shots-2" / "seed-0"
    assert (folder / "prompts.safetensors").is_file() and not (folder / "checkpoint.safetensors").exists()
    key = read_record(folder)["key"]
    assert finished(folder, key) == (True, "kept")
    assert finished(folder, {**key, "bootstrap": 51}) == (False, "settings changed")


def test_protocol_without_data_or_weights_stops_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--protocol", "pathotune-crc", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zenodo.org/records/1214456" in err and "--train not given" in err
    data = tmp_path / "data"
    data.mkdir()
    assert main(["--protocol", "pathotune-crc", "--train", str(data), "--test", str(data),
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "weights missing for pathoduet-he, vit-b16-in21k, uni" in err
    assert "hf download MahmoodLab/UNI pytorch_model.bin" in err and "checkpoint_HE.pth" in err
    assert not (tmp_path / "a").exists()  # nothing ran


def test_protocol_report_prints_their_numbers_labelled_as_theirs(tmp_path: Path) -> None:
    from benchmarks.accuracy.grid import GridSpec
    from benchmarks.accuracy.protocol import PROTOCOLS
    from benchmarks.accuracy.report import markdown

    protocol = PROTOCOLS["pathotune-crc"]
    spec = GridSpec(task="crc", train=tmp_path, test=tmp_path, backbones=protocol.backbones, out=tmp_path,
                    protocol=protocol.name)
    text = markdown(spec, [], {}, {"references": list(protocol.references)})
    assert "## Reference numbers (theirs, not measured here)" in text
    assert "| linear | 0.9639 | 0.9496 | not run | not run |" in text
    assert "| full | 0.9731 | 0.9636 | not run | not run |" in text


@pytest.mark.parametrize(("args", "pattern"), [
    (["--set", "prompt.method=full"], "--set prompt.method=full would override the grid"),
    (["--methods", "linear,adapter"], "--methods linear,adapter"),
    (["--ablate", "ttp,ivp"], "--ablate without tvp"),
    (["--shots", "2,few"], "--shots 'few' is not a whole number"),
    (["--task", "camelyon16"], "task 'camelyon16' is slide-level"),
])
def test_bad_grid_options_exit_2_in_one_line(inputs, tmp_path: Path, capsys, args: list[str], pattern: str) -> None:
    tiles, preset = inputs
    base = ["--task", "demo", "--train", str(tiles), "--test", str(tiles), "--backbones", str(preset),
            "--out", str(tmp_path / "a")]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and pattern in err

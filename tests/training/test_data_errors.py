"""Bad training data gets one line naming the problem and the fix, and exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.config import load_task_preset
from pathotune_cli.errors import BadInput
from pathotune_cli.training.data import discover, require_classes, sample_shots, split_train_val

runner = CliRunner()


def _tile(path: Path, colour: tuple[int, int, int] = (200, 100, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


def _tune(data: Path, tmp_path: Path):
    return runner.invoke(
        app,
        ["tune", "--preset", "demo", "--data", str(data), "--backbone", "tiny-random", "--out", str(tmp_path / "run"),
         "--epochs", "1"],
    )


def _assert_one_line(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_empty_data_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _assert_one_line(_tune(tmp_path / "data", tmp_path), r"has no class folders; put one folder per class")


def test_missing_data_folder(tmp_path: Path) -> None:
    _assert_one_line(_tune(tmp_path / "nope", tmp_path), r"data .*nope does not exist")


def test_class_folder_without_images(tmp_path: Path) -> None:
    _tile(tmp_path / "data" / "tumor" / "a.png")
    (tmp_path / "data" / "stroma").mkdir()
    _assert_one_line(_tune(tmp_path / "data", tmp_path), r"class folder .*stroma has no images")


def test_only_one_class(tmp_path: Path) -> None:
    _tile(tmp_path / "data" / "tumor" / "a.png")
    _tile(tmp_path / "data" / "tumor" / "b.png")
    _assert_one_line(_tune(tmp_path / "data", tmp_path), r"images of only 1 class\(es\) \(tumor\)")


def test_unknown_class_folder(tmp_path: Path) -> None:
    _tile(tmp_path / "data" / "tumor" / "a.png")
    _tile(tmp_path / "data" / "necrosis" / "a.png")
    _assert_one_line(
        _tune(tmp_path / "data", tmp_path), r"'necrosis' .* is not a class of task 'demo' \(classes: tumor, stroma"
    )


def test_non_image_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    task = load_task_preset("demo")
    _tile(tmp_path / "tumor" / "a.png")
    _tile(tmp_path / "stroma" / "a.png")
    (tmp_path / "stroma" / "notes.txt").write_text("not an image")
    warnings: list[str] = []
    data = discover(tmp_path, task, warnings.append)
    assert len(data) == 2
    assert warnings and "notes.txt" in warnings[0]


def test_corrupt_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    for cls in ("tumor", "stroma"):
        for i in range(3):
            _tile(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "stroma" / "broken.png").write_bytes(b"this is not a png")
    _assert_one_line(_tune(tmp_path / "data", tmp_path), r"broken.png is not a readable image")


def test_class_names_forgive_case_separators_and_use_aliases(tmp_path: Path) -> None:
    task = load_task_preset("kather2016")
    _tile(tmp_path / "01_TUMOR" / "a.png")
    _tile(tmp_path / "Adipose" / "a.png")
    _tile(tmp_path / "lympho" / "a.png")
    data = discover(tmp_path, task)
    counts = data.counts()
    assert counts["TUMOR"] == counts["ADIPOSE"] == counts["LYMPHO"] == 1


def test_csv_with_splits_and_unknown_label(tmp_path: Path) -> None:
    task = load_task_preset("demo")
    for i in range(4):
        _tile(tmp_path / f"t{i}.png")
        _tile(tmp_path / f"s{i}.png")
    rows = ["path,label,split"] + [f"t{i}.png,tumor,{'val' if i == 0 else 'train'}" for i in range(4)]
    rows += [f"s{i}.png,Stroma,{'val' if i == 0 else 'train'}" for i in range(4)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    data = discover(tmp_path / "data.csv", task)
    train, val = split_train_val(data, 0.5, seed=0)
    assert len(train) == 6 and val is not None and len(val) == 2
    (tmp_path / "bad.csv").write_text("path,label\nt0.png,necrosis\n")
    with pytest.raises(BadInput, match=r"bad.csv line 2: label 'necrosis' is not a class"):
        discover(tmp_path / "bad.csv", task)


def test_stratified_split_and_shots_are_seeded(tmp_path: Path) -> None:
    task = load_task_preset("demo")
    for cls in ("tumor", "stroma"):
        for i in range(10):
            _tile(tmp_path / cls / f"{i}.png")
    data = discover(tmp_path, task)
    require_classes(data)
    train_a, val_a = split_train_val(data, 0.2, seed=1)
    train_b, val_b = split_train_val(data, 0.2, seed=1)
    assert [str(p) for p in val_a.paths] == [str(p) for p in val_b.paths]
    assert val_a.counts()["tumor"] == val_a.counts()["stroma"] == 2
    shots = sample_shots(train_a, 3, seed=1)
    assert shots.counts()["tumor"] == shots.counts()["stroma"] == 3

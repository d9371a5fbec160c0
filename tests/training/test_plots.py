"""Plots land as whole, readable PNGs, leave no temporary files, and tolerate gaps in the history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathotune_cli.training.plots import save_confusion_matrix, save_history_curves


def assert_png(path: Path, min_side: int = 300, max_side: int = 3000) -> None:
    """The file is a PNG that PIL decodes, of a sensible size, with no temporary file beside it."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        width, height = image.size
    assert min_side <= width <= max_side and min_side <= height <= max_side, image.size
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temporary file left behind"


@pytest.mark.parametrize("classes", [2, 4, 10])
def test_confusion_matrix_is_a_png(tmp_path: Path, classes: int) -> None:
    rng = np.random.default_rng(classes)
    matrix = rng.integers(0, 200, size=(classes, classes))
    matrix[0] = 0  # a class with no true samples must not divide by zero
    names = [f"long class name {j}" for j in range(classes)]
    out = save_confusion_matrix(matrix, names, tmp_path / "confusion.png", title="validation")
    assert out == tmp_path / "confusion.png"
    assert_png(out)


def test_confusion_matrix_overwrites_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "run" / "plots" / "confusion.png"
    save_confusion_matrix([[5, 1], [2, 7]], ["a", "b"], target)
    first = target.read_bytes()
    save_confusion_matrix([[50, 0], [0, 70]], ["a", "b"], str(target))
    assert target.read_bytes() != first
    assert_png(target)


def test_confusion_matrix_refuses_mismatched_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be 3x3 for 3 class names"):
        save_confusion_matrix(np.ones((2, 2)), ["a", "b", "c"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_history_curves_with_gaps_are_a_png(tmp_path: Path) -> None:
    history = [
        {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "val_loss": None if epoch == 3 else 1.2 / epoch,
            "val_accuracy": None if epoch == 3 else 0.5 + 0.04 * epoch,
            "val_balanced_accuracy": 0.45 + 0.04 * epoch,
            "lr": 1e-3 * 0.8**epoch,
        }
        for epoch in range(1, 11)
    ]
    assert_png(save_history_curves(history, tmp_path / "history.png"))


def test_history_curves_with_one_epoch_and_missing_columns(tmp_path: Path) -> None:
    history = [{"epoch": 1, "train_loss": 0.9, "val_loss": None, "lr": None}]
    assert_png(save_history_curves(history, tmp_path / "history.png"))


def test_history_curves_with_no_epochs_still_writes_a_figure(tmp_path: Path) -> None:
    assert_png(save_history_curves([], tmp_path / "history.png"))


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", explode)
    with pytest.raises(OSError, match="disk full"):
        save_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = "import sys, pathotune_cli.training.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_plotting_leaves_the_global_backend_and_pyplot_alone(tmp_path: Path) -> None:
    code = (
        "import sys, pathotune_cli.training.plots as p;"
        f"p.save_confusion_matrix([[1, 2], [3, 4]], ['a', 'b'], {str(tmp_path / 'c.png')!r});"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_diverged_losses_leave_gaps_instead_of_failing(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": 1.0, "lr": 0.0},
        {"epoch": 2, "train_loss": float("inf"), "val_loss": float("nan"), "lr": 1e-4},
    ]
    assert_png(save_history_curves(history, tmp_path / "history.png"))


def test_written_file_is_as_readable_as_any_other(tmp_path: Path) -> None:
    """A temp file from mkstemp would carry mode 0600 through the rename; the lab's group must read plots."""
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    out = save_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "plots" / "confusion.png")
    assert out.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777

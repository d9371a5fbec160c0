"""The demo's data is learnable: `pathotune` reaches at least 0.9 validation accuracy on it."""

from __future__ import annotations

from pathlib import Path

from pathotune_cli.runs.demo import demo_run


def test_demo_reaches_ninety_percent_validation_accuracy(tmp_path: Path) -> None:
    result = demo_run(tmp_path / "demo", epochs=6, seed=0)
    assert result.tune["validation"]["accuracy"] >= 0.9
    assert result.eval["metrics"]["accuracy"] >= 0.9
    for path in result.artifacts.values():
        assert Path(path).exists(), path

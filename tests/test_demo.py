"""The demo's data is learnable: tiles to at least 0.9 accuracy, slides to an AUROC of at least 0.9 with the
model looking at the planted tumour."""

from __future__ import annotations

from pathlib import Path

from pathotune_cli.runs.demo import demo_run


def test_demo_reaches_ninety_percent_validation_accuracy(tmp_path: Path) -> None:
    result = demo_run(tmp_path / "demo", epochs=6, seed=0)
    assert result.tune.validation["accuracy"] >= 0.9
    assert result.eval.metrics["accuracy"] >= 0.9
    assert result.slide_level.test_auroc >= 0.9
    assert result.slide_level.top8_in_tumour >= 0.8  # of the 8 most attended tiles of each positive slide
    for path in result.artifacts.values():
        assert Path(path).exists(), path

"""WSInfer 0.6.1 itself runs ``export --format wsinfer`` on the demo slide and gives ``pathotune predict``'s answers.

WSInfer lives in a scratch environment (``tests/wsinfer_env.py``: built once from the package index, cached under
``~/.cache/pathotune-tests``), never in pathotune's dependencies. Its CLI starts offline from a HOME that holds
a model-zoo registry.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

from wsinfer_env import WSINFER_VERSION, wsinfer_executable, wsinfer_home, wsinfer_python

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wsinfer() -> Path:
    return wsinfer_executable()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny-random demo prompt file, briefly tuned, and the demo slide (four class regions, 0.5 µm/px)."""
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.demo import write_demo_slide
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    root = tmp_path_factory.mktemp("wsinfer-demo")
    data = write_demo_tiles(root / "tiles", per_class=8, seed=0)
    config = resolve_config(TuneOptions(preset="demo", data=str(data), backbone="tiny-random", out=str(root / "run"),
                                        epochs=2, seed=0, sets=["train.lr=3e-3"]))
    return tune_run(config).prompts, write_demo_slide(root / "demo-slide.tiff")


@pytest.fixture
def offline_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    home = wsinfer_home()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_wsinfer_runs_the_export_and_agrees_with_predict_on_the_demo_slide(
    demo: tuple[Path, Path], wsinfer: Path, offline_home: Path, tmp_path: Path
) -> None:
    prompts, slide = demo
    out = tmp_path / "pathotune-demo"
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--out", str(out),
                                 "--check-wsinfer", str(slide), "--wsinfer", str(wsinfer), "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)["wsinfer_check"]
    assert checked["wsinfer_version"] == WSINFER_VERSION and checked["pathotune_level"] == 0
    assert checked["shared_tiles"] >= 100 and checked["passed"]
    assert checked["top_class_agreement"] >= 0.99 and checked["max_abs_dp"] <= 0.02
    assert checked["max_abs_dp"] <= 1e-5  # the same pixels through the same graph: only the CSVs' rounding
    card = json.loads((out / "torchscript_model.pt.card.json").read_text())
    assert card["wsinfer"]["check"]["shared_tiles"] == checked["shared_tiles"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "torchscript_model.pt", "torchscript_model.pt.card.json", "torchscript_model.pt.card.md"]
    zoo = subprocess.run(
        [str(wsinfer_python()), "-c", "import json, sys; from wsinfer_zoo.client import ModelConfiguration; "
         "ModelConfiguration.from_dict(json.load(open(sys.argv[1]))); print('valid')", str(out / "config.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert zoo.stdout.strip() == "valid", zoo.stderr[-800:]  # wsinfer-zoo's own schema and checks


def test_a_model_that_returns_probabilities_fails_the_check_in_one_line(
    demo: tuple[Path, Path], wsinfer: Path, offline_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug this check exists for: WSInfer softmaxes a model's output, so probabilities get a double softmax."""
    import pathotune_cli.engine.export as engine_export

    prepare = engine_export.prepare
    monkeypatch.setattr(engine_export, "prepare", lambda model, size=None, output="", t=1.0: prepare(model, size))
    prompts, slide = demo
    out = tmp_path / "wrong"
    result = runner.invoke(app, ["export", str(prompts), "--format", "wsinfer", "--out", str(out), "--no-check",
                                 "--check-wsinfer", str(slide), "--wsinfer", str(wsinfer)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "WSInfer and pathotune predict disagree on demo-slide.tiff" in lines[0], result.output
    assert not (out / "torchscript_model.pt").exists() and not (out / "config.json").exists()

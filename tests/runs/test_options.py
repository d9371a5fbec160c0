"""Every run's options validate themselves, in the same words for the CLI and for Python callers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.runs.evaluate import EvalOptions
from pathotune_cli.runs.export import ExportOptions
from pathotune_cli.runs.predict import PredictOptions
from pathotune_cli.runs.tile import TileConfig
from pathotune_cli.runs.tune import TuneOptions


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TuneOptions(data=Path("d")), "no task given"),
        (lambda: TuneOptions(preset="crc"), "no training data given"),
        (lambda: PredictOptions(prompts=Path("p.safetensors")), "nothing to predict on"),
        (lambda: PredictOptions(prompts=Path("p"), inputs=(Path("s"),), batch_size=0), "--batch-size 0"),
        (lambda: PredictOptions(prompts=Path("p"), inputs=(Path("s"),), min_tissue=2.0), "--min-tissue 2.0"),
        (lambda: PredictOptions(prompts=Path("p"), inputs=(Path("s"),), tissue="magic"), "not a tissue mode"),
        (lambda: EvalOptions(prompts=Path("p"), data=Path("d"), bootstrap=-1), "--bootstrap -1"),
        (lambda: ExportOptions(prompts=Path("p"), format="tflite"), "unknown export format 'tflite'"),
        (lambda: TileConfig(slides=(Path("s"),), overlap=300, tile_size=224), "--overlap 300"),
    ],
)
def test_bad_options_are_refused_in_one_line(build, message: str) -> None:
    with pytest.raises(BadInput, match=message) as info:
        build()
    assert "\n" not in info.value.one_line()


def test_python_callers_may_pass_strings_for_paths(tmp_path: Path) -> None:
    opts = PredictOptions(prompts=str(tmp_path / "p.safetensors"), inputs=[str(tmp_path)], out=str(tmp_path / "o"))
    assert opts.prompts == tmp_path / "p.safetensors" and opts.inputs == (tmp_path,) and opts.out == tmp_path / "o"
    assert TuneOptions(preset="demo", data=str(tmp_path), sets=["a=1"]).sets == ("a=1",)
    assert ExportOptions(prompts=str(tmp_path / "p.safetensors"), format=" ONNX ").format == "onnx"

"""The seams between commands, closed: one per-slide engine, one way to find inputs, one tiling at both levels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.runs.slide_level.demo import write_planted_slides

runner = CliRunner()
SIZE = (672, 448)  # 3 x 2 tiles of 224 px at 0.5 µm/px (camelyon16's tiles)


def _invoke(*args: object):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _without_mpp(source: Path, target: Path) -> Path:
    """The same pixels in a tiled TIFF that states no microns per pixel (as many slides in the wild)."""
    import tifffile

    tifffile.imwrite(target, tifffile.imread(source), tile=(256, 256), compression="jpeg", photometric="rgb")
    return target


@pytest.fixture(scope="module")
def tile_model(tiny_run: Path) -> Path:
    """A tile-level prompt file (the demo task: 112 px tiles at 0.5 µm/px)."""
    return tiny_run / "prompts.safetensors"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight planted slides, none of which states its mpp."""
    made = write_planted_slides(tmp_path_factory.mktemp("with-mpp"), seed=5, count=8, size=SIZE)
    folder = tmp_path_factory.mktemp("no-mpp")
    return [_without_mpp(p, folder / p.name) for p in made]


@pytest.fixture(scope="module")
def slide_model(slides: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide-level prompt file tuned on slides without mpp: ``--default-mpp`` for most, a CSV mpp for one."""
    root = tmp_path_factory.mktemp("run")
    data = root / "slides.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "split", "mpp"])
        for i, path in enumerate(slides):
            writer.writerow([path, "tumor" if i % 2 else "normal", "val" if i in (6, 7) else "train",
                             "0.5" if i == 0 else ""])
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", "tiny-random", "--epochs", 1,
                     "--default-mpp", 0.5, "--set", "mil.tiles_per_slide=4", "--set", "mil.chunk=2",
                     "--out", root / "RUN")
    assert result.exit_code == 0, result.output
    record = json.loads((root / "RUN" / "run.json").read_text())
    assert record["status"] == "finished"  # slide-level tune keeps the run record's lifecycle
    return root / "RUN" / "prompts.safetensors"


def test_slide_level_tune_records_a_failure_in_run_json(slides: list[Path], tmp_path: Path) -> None:
    data = tmp_path / "slides.csv"
    data.write_text("slide,label\n" + "".join(f"{p},{'tumor' if i % 2 else 'normal'}\n" for i, p in
                                              enumerate(slides[:4])))
    result = _invoke("tune", "--preset", "camelyon16", "--data", data, "--backbone", "tiny-random", "--epochs", 1,
                     "--out", tmp_path / "RUN")  # no --default-mpp: the slides state none
    assert result.exit_code == 2, result.output
    assert "no microns-per-pixel" in result.output
    record = json.loads((tmp_path / "RUN" / "run.json").read_text())
    assert record["status"] == "failed" and "no microns-per-pixel" in record["error"]


def test_a_slide_without_mpp_works_at_slide_level_with_default_mpp_and_a_csv_mpp(
    slide_model: Path, slides: list[Path], tmp_path: Path
) -> None:
    refused = _invoke("predict", slide_model, slides[1], "--out", tmp_path / "none")
    assert refused.exit_code == 2 and "--default-mpp" in refused.output  # one slide: bad input
    by_option = _invoke("predict", slide_model, slides[1], "--default-mpp", 0.5, "--out", tmp_path / "A")
    assert by_option.exit_code == 0, by_option.output
    listed = tmp_path / "list.csv"
    listed.write_text(f"slide,mpp\n{slides[1]},0.5\n")
    by_csv = _invoke("predict", slide_model, "--slides-csv", listed, "--out", tmp_path / "B")
    assert by_csv.exit_code == 0, by_csv.output
    a, b = _rows(tmp_path / "A" / "summary.csv")[0], _rows(tmp_path / "B" / "summary.csv")[0]
    assert (a["mpp_source"], b["mpp_source"]) == ("default", "csv")
    assert a["label"] == b["label"] and a["tiles"] == b["tiles"] and int(a["tiles"]) > 0
    evaluated = tmp_path / "eval.csv"
    evaluated.write_text(f"slide,label,mpp\n{slides[1]},tumor,0.5\n{slides[2]},normal,\n")
    result = _invoke("eval", slide_model, "--data", evaluated, "--default-mpp", 0.5, "--bootstrap", 10,
                     "--out", tmp_path / "E", "--json")
    assert result.exit_code == 0, result.output


def test_slide_level_predict_honours_the_tissue_options(slide_model: Path, slides: list[Path], tmp_path: Path) -> None:
    counts = []
    for share in (0.1, 0.9):
        out = tmp_path / f"t{share}"
        result = _invoke("predict", slide_model, slides[3], "--default-mpp", 0.5, "--min-tissue", share,
                         "--out", out)
        assert result.exit_code == 0, result.output
        counts.append(int(_rows(out / "summary.csv")[0]["tiles"]))
    assert counts[0] > counts[1]


def test_coords_of_another_scale_are_refused_naming_both(tile_model: Path, tmp_path: Path) -> None:
    slide = write_planted_slides(tmp_path, seed=1, count=1, size=(1344, 896))[0]
    coarse = _invoke("tile", slide, "--mpp", 1.0, "--tile-size", 112, "--out", tmp_path / "T")
    assert coarse.exit_code == 0, coarse.output
    result = _invoke("predict", tile_model, slide, "--coords", tmp_path / "T", "--out", tmp_path / "P")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "holds tiles of 112 µm (cut at 1 µm/px" in line and "this model reads tiles of" in line


def test_one_folder_holds_one_models_predictions(tile_model: Path, tmp_path: Path) -> None:
    slide = write_planted_slides(tmp_path, seed=2, count=1, size=(448, 448))[0]
    first = _invoke("predict", tile_model, slide, "--out", tmp_path / "P")
    assert first.exit_code == 0, first.output
    assert _rows(tmp_path / "P" / "summary.csv")[0]["prompts"] == tile_model.name
    retrained = _invoke("tune", "--preset", "kather2016", "--data", _kather_like(tmp_path), "--backbone",
                        "tiny-random", "--epochs", 1, "--seed", 7, "--out", tmp_path / "R")
    assert retrained.exit_code == 0, retrained.output
    second = _invoke("predict", tmp_path / "R" / "prompts.safetensors", slide, "--out", tmp_path / "P")
    assert second.exit_code == 2, second.output
    assert "holds predictions of another prompt file" in second.output


def _kather_like(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "tiles"
    rng = np.random.default_rng(0)
    for name in ("TUMOR", "STROMA"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_inputs_are_found_one_way_in_every_command(tile_model: Path, tmp_path: Path) -> None:
    nested = tmp_path / "archive" / "2024" / "case-7"
    nested.mkdir(parents=True)
    write_planted_slides(nested, seed=4, count=1, size=(448, 448))
    tiles = tmp_path / "nct"
    tiles.mkdir()
    import tifffile

    rng = np.random.default_rng(1)
    for i in range(3):  # NCT-CRC-HE-100K ships its tiles as flat 224 px .tif files
        tifffile.imwrite(tiles / f"ADI-{i}.tif", rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    for command, extra in (("tile", ["--tile-size", 112]), ("features", ["--backbone", "tiny-random"])):
        result = _invoke(command, tmp_path / "archive", "--out", tmp_path / command, *extra)
        assert result.exit_code == 0, result.output
        assert [r["status"] for r in _rows(tmp_path / command / "manifest.csv")] == ["ok"]
    result = _invoke("predict", tile_model, tmp_path / "archive", tiles, "--out", tmp_path / "P", "--json")
    assert result.exit_code == 0, result.output
    assert [r["slide"] for r in _rows(tmp_path / "P" / "summary.csv")] == ["s00.tiff"]
    assert len(_rows(tmp_path / "P" / "predictions.csv")) == 3  # the .tif tiles as tiles, not slides


def test_a_slide_list_from_standard_input(tile_model: Path, tmp_path: Path) -> None:
    slides = write_planted_slides(tmp_path, seed=6, count=2, size=(448, 448))
    listing = "".join(f"{p}\n" for p in slides)
    result = subprocess.run([sys.executable, "-m", "pathotune_cli", "predict", "-p", str(tile_model), "-",
                             "--out", str(tmp_path / "P")], input=listing, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(r["slide"] for r in _rows(tmp_path / "P" / "summary.csv")) == ["s00.tiff", "s01.tiff"]


def test_the_prompt_file_is_found_in_any_argument_position(tile_model: Path, tmp_path: Path) -> None:
    slide = write_planted_slides(tmp_path, seed=8, count=1, size=(448, 448))[0]
    result = _invoke("predict", slide, tile_model, "--out", tmp_path / "P")
    assert result.exit_code == 0, result.output
    assert _rows(tmp_path / "P" / "summary.csv")[0]["status"] == "ok"


def test_devices_refuse_a_slide_list_on_standard_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tile", "-", "--devices", "cpu,cpu", "--out", str(tmp_path / "T")], input="a.svs\n")
    assert result.exit_code == 2
    assert "--devices with a slide list on standard input" in result.output and "--slides-csv FILE" in result.output

"""`pathotune report` on predict and eval folders, opened in headless Chromium offline: no console message, no
request leaving the file, one row and one map per slide, metrics and charts on the eval page, a real screenshot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()
SLIDES = ("left-slide", "right-slide")


def _invoke(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def predict_folder(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo slides predicted with the tiny run's prompts (one top tile per class explained); ``predict`` writes
    each one's plain thumbnail, and the second's is removed, as in a folder predicted before thumbnails were kept."""
    from pathotune_cli.runs.demo import write_demo_slide

    root = tmp_path_factory.mktemp("report-predict")
    slides = [write_demo_slide(root / "slides" / f"{name}.tiff", seed=i) for i, name in enumerate(SLIDES)]
    out = root / "P"
    _invoke(["predict", str(tiny_run / "prompts.safetensors"), *map(str, slides), "--out", str(out),
             "--workers", "0", "--precision", "fp32", "--explain-top", "1"])
    assert (out / "report.html").is_file()  # predict writes the page by default
    (out / f"{SLIDES[1]}.thumb.jpg").unlink()
    _invoke(["report", str(out)])
    return out


@pytest.fixture(scope="module")
def eval_folder(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's prompts evaluated on its tiles, with ``--report``."""
    out = tmp_path_factory.mktemp("report-eval") / "E"
    _invoke(["eval", str(tiny_run / "prompts.safetensors"), "--data", str(tiny_run.parent / "tiles"), "--out",
             str(out), "--bootstrap", "20", "--precision", "fp32", "--report"])
    return out


def _card(dom: str, stem: str) -> str:
    match = re.search(rf'<section class="slide" id="slide-{re.escape(stem)}">(.*?)</section>', dom, re.S)
    assert match, f"no card for {stem}"
    return match.group(1)


def test_predict_report_opens_offline_with_a_row_and_a_map_per_slide(predict_folder: Path, browse) -> None:
    page = predict_folder / "report.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text)  # nothing on the page points at the network
    seen = browse(page)
    assert seen.console == [] and seen.requests == []
    assert 'data-ready="1"' in seen.dom
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', seen.dom).groups())
    assert loaded == total >= 2 * len(SLIDES)
    body = re.search(r'<table id="slide-table".*?<tbody>(.*?)</tbody>', seen.dom, re.S).group(1)
    rows = re.findall(r"<tr[ >].*?</tr>", body, re.S)
    assert len(rows) == len(SLIDES) and all(f"{s}.tiff" in "".join(rows) for s in SLIDES)
    for stem in SLIDES:  # every slide has its explained top tiles
        assert "explained tile" in _card(seen.dom, stem)
    with_thumb = _card(seen.dom, SLIDES[0])  # the thumbnail, with the maps over it
    assert re.search(r'<img class="thumb"[^>]*src="data:image/jpeg', with_thumb)
    assert {"class", "confidence"} <= set(re.findall(r'<img class="overlay" data-key="(\w+)"', with_thumb))
    tags = [re.sub(r'src="[^"]*"', "", tag) for tag in re.findall(r'<img class="overlay"[^>]*>', with_thumb)]
    shown = [re.search(r'data-key="(\w+)"', tag).group(1) for tag in tags if not re.search(r"\shidden\b", tag)]
    assert shown == ["class"]  # one map at a time: the switch shows the chosen one only
    without = _card(seen.dom, SLIDES[1])  # no thumbnail: the map as predict drew it
    assert re.search(r'<img class="picture map"[^>]*src="data:image/jpeg;base64,', without)
    assert "has no plain thumbnail" in without and 'class="overlay"' not in without
    assert 'id="random-weights"' in seen.dom and 'id="research-use"' in seen.dom
    assert all(src.startswith("data:") for src in re.findall(r'<img [^>]*src="([^"]*)"', seen.dom))


def test_predict_report_screenshot_shows_the_table_and_the_slide(predict_folder: Path, browse) -> None:
    seen = browse(predict_folder / "report.html")
    width, height = seen.window
    shot = np.asarray(Image.open(seen.screenshot).convert("RGB")).astype(int)
    assert shot.shape[:2] == (height, width)
    header_cells = np.all(shot == (244, 244, 241), axis=2)  # the table's header background
    assert header_cells.sum() > 2000
    rows = np.nonzero(header_cells.any(axis=1))[0]
    assert rows.min() < height // 2  # the table sits in the upper half
    alarm = np.all(shot == (253, 231, 234), axis=2)  # the random-weights warning's background
    assert alarm.sum() > 5000
    saturation = shot.max(axis=2) - shot.min(axis=2)
    colourful = (saturation > 60) & ~alarm & ~np.all(shot == (255, 243, 205), axis=2)
    assert colourful[rows.max():].sum() > 20000  # below the table: the slide pictures, decoded and drawn


def test_eval_report_shows_metrics_confusion_matrix_and_reliability(eval_folder: Path, browse) -> None:
    seen = browse(eval_folder / "report.html")
    assert seen.console == [] and seen.requests == []
    dom = seen.dom
    metrics = re.search(r'<section id="metrics">(.*?)</section>', dom, re.S).group(1)
    assert "balanced accuracy" in metrics and "95% CI" in metrics
    assert re.search(r"\d\.\d{3} - \d\.\d{3}", metrics)
    matrix = re.search(r'<section id="confusion-matrix">(.*?)</section>', dom, re.S).group(1)
    assert len(re.findall(r"<tr>", matrix)) == 1 + 4  # header and the four demo classes
    assert re.search(r'<img class="picture" id="reliability-diagram"[^>]*src="data:image/png', dom)
    assert 'id="coverage"' in dom and 'id="per-class"' in dom
    assert 'id="random-weights"' in dom and "tiny-random" in dom
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    assert loaded == total >= 2


def test_the_browser_checks_catch_console_errors_and_requests(tmp_path: Path, browse) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.com/a.png">'
                    '<script>throw new Error("boom")</script></body></html>')
    seen = browse(page)
    assert any("boom" in line for line in seen.console)
    assert seen.requests == ["http://example.com/a.png"]


def test_report_without_the_prompt_file_claims_nothing_about_weights_or_calibration(eval_folder: Path,
                                                                                     tmp_path: Path) -> None:
    import json

    folder = tmp_path / "E"
    shutil.copytree(eval_folder, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["prompts"] = str(tmp_path / "gone.safetensors")
    metrics["calibration"]["probabilities"] = "raw"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    _invoke(["report", str(folder)])
    text = (folder / "report.html").read_text()
    assert 'id="random-weights"' not in text and "random weights</dt><dd>unknown" in text
    assert "the run&#x27;s records only" in text and "not calibrated" in text
    assert "calibrated probabilities" not in text


def test_predict_writes_the_plain_thumbnail_the_report_overlays(tiny_run: Path, tmp_path: Path) -> None:
    from pathotune_cli.runs.demo import write_demo_slide
    from pathotune_cli.wsi.thumbnail_file import slide_thumbnail_level0_size

    slide = write_demo_slide(tmp_path / "s.tiff")
    _invoke(["predict", str(tiny_run / "prompts.safetensors"), str(slide), "--out", str(tmp_path / "P"),
             "--workers", "0"])
    assert slide_thumbnail_level0_size(tmp_path / "P" / "s.thumb.jpg") == (1792, 1344)

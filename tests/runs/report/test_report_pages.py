"""The report's pages from hand-made records (no browser, no model): which columns and warnings it shows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pathotune_cli.runs.report import report_run

CLASSES = ("tumor", "stroma")


def _predict_folder(folder: Path, rows: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "run.json").write_text(json.dumps({"command": "predict", "settings": {"prompts": "/gone.safetensors"}}))
    return folder


def _row(name: str, status: str = "ok", **extra: object) -> dict[str, object]:
    return {"slide": name, "status": status, "tiles": 10, "tissue_area_mm2": 1.5, "fraction_tumor": 0.7,
            "fraction_stroma": 0.3, "area_mm2_tumor": 1.0, "area_mm2_stroma": 0.5, "ood_fraction": 0.1,
            "tiles_damaged": "", "stain_distance": "", "modality_ok": "", "error": "", **extra}


def test_quality_columns_show_when_the_summary_has_them(tmp_path: Path) -> None:
    folder = _predict_folder(tmp_path / "P", [
        _row("a.svs", tiles_damaged=3, stain_distance=0.42, modality_ok="no"),
        _row("b.svs", status="failed", tiles=0, error="b.svs: not a slide; pass a slide", fraction_tumor="",
             fraction_stroma="", area_mm2_tumor="", area_mm2_stroma="", ood_fraction="", tissue_area_mm2=""),
    ])
    result = report_run(folder)
    text = result.path.read_text()
    assert result.kind == "predict" and result.slides == 2
    header = text[text.index('<table id="slide-table"'):text.index("</thead>")]
    for label in ("top class", "tumor %", "stroma mm²", "OOD share", "damaged tiles", "stain distance",
                  "modality ok"):
        assert f"<button type=button>{label}</button>" in header
    assert "mean set size" not in header  # a column no slide has a value in is left out
    assert '<tr data-top="tumor"><td class="text"><a href="#slide-a">' in text
    assert '<tr data-top="" class="failed"><td class="text"><a href="#slide-b">' in text
    assert "b.svs: not a slide; pass a slide" in text
    assert "the run&#x27;s records only" in text and 'id="random-weights"' not in text


def test_quality_columns_are_left_out_when_absent(tmp_path: Path) -> None:
    rows = [{k: v for k, v in _row("a.svs").items() if k not in ("tiles_damaged", "stain_distance", "modality_ok")}]
    text = report_run(_predict_folder(tmp_path / "P", rows)).path.read_text()
    assert "damaged tiles" not in text and "stain distance" not in text and "modality ok" not in text
    assert '<a href="#slide-a">a.svs</a>' in text


def test_names_are_escaped(tmp_path: Path) -> None:
    text = report_run(_predict_folder(tmp_path / "P", [_row('<script>alert("x")</script>.svs')])).path.read_text()
    assert '<script>alert("x")' not in text and "&lt;script&gt;" in text


def test_sorting_and_filtering_work_in_the_browser(tmp_path: Path, browse) -> None:
    rows = [_row("b.svs", tiles=30), _row("a.svs", tiles=200, fraction_tumor=0.2, fraction_stroma=0.8),
            _row("c.svs", tiles=5)]
    page = report_run(_predict_folder(tmp_path / "P", rows)).path
    clicks = """<script>
      var tiles = Array.prototype.find.call(document.querySelectorAll("#slide-table th button"),
                                            function (b) { return b.textContent === "tiles"; });
      tiles.click(); tiles.click();  // descending
      var order = Array.prototype.map.call(document.querySelectorAll("#slide-table tbody tr"),
                                           function (r) { return r.cells[0].textContent; }).join(",");
      var pick = document.querySelector(".filter select"); pick.value = "stroma";
      pick.dispatchEvent(new Event("change"));
      var shown = Array.prototype.filter.call(document.querySelectorAll("#slide-table tbody tr"),
                                              function (r) { return !r.hidden; }).length;
      document.body.setAttribute("data-test", order + "|" + shown);
    </script></body>"""
    page.write_text(page.read_text().replace("</body>", clicks))
    seen = browse(page)
    assert seen.console == []
    assert 'data-test="a.svs,b.svs,c.svs|1"' in seen.dom
    assert "1 of 3 slides shown" in seen.dom


def test_a_tuning_run_is_not_taken_for_an_eval_folder(tiny_run: Path) -> None:
    from typer.testing import CliRunner

    from pathotune_cli.cli.app import app

    result = CliRunner().invoke(app, ["report", str(tiny_run), "--out", str(tiny_run.parent / "r.html")])
    assert result.exit_code == 2
    assert "is not a predict or eval folder" in result.output and not (tiny_run.parent / "r.html").exists()

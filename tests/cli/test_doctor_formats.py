"""`pathotune doctor` lists the slide formats this install reads, and what adds or converts the rest."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pathotune_cli.cli.app import app

runner = CliRunner()


def test_doctor_lists_which_slide_formats_this_install_reads() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["format"]: row for row in json.loads(result.stdout)["slide_formats"]}
    for name in ("Aperio SVS", "OME-TIFF", "Zeiss CZI", "OME-Zarr", "DICOM WSI", "3DHISTECH MRXS"):
        assert rows[name]["reads"] is True, name
    assert rows["Olympus/Evident VSI"]["reads"] is False and "bfconvert" in rows["Olympus/Evident VSI"]["add"]
    assert {"pylibCZIrw", "zarr"} <= set(json.loads(result.stdout)["versions"])


def test_doctor_table_shows_formats_and_the_package_that_adds_a_missing_one(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pylibCZIrw" else real(name, *a))
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "Zeiss CZI" in line)
    assert "pip install pylibCZIrw" in line
    assert any("OME-Zarr" in line and "reads it" in line for line in result.output.splitlines())

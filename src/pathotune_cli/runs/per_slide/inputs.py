"""Slide lists shared by ``tile`` and ``predict``: the slides CSV and per-slide tissue GeoJSON files."""

from __future__ import annotations

import csv
from pathlib import Path

from pathotune_cli.errors import BadInput


def read_slides_csv(path: Path) -> list[tuple[Path, float | None]]:
    """Rows of a slides CSV: ``slide`` (or ``wsi``/``path``) and an optional ``mpp`` column."""
    if not path.is_file():
        raise BadInput(f"{path}: no such slides CSV", "check the --slides-csv path")
    try:
        return _read_slides_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{path}: not a readable CSV ({type(exc).__name__})",
                       "save it as a UTF-8 CSV with the columns slide,mpp") from None


def _read_slides_csv(path: Path) -> list[tuple[Path, float | None]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or [] if c is not None}
        key = next((columns[c] for c in ("slide", "wsi", "path") if c in columns), None)
        if key is None:
            raise BadInput(
                f"{path.name}: no 'slide' column", "the first line must name the columns: slide,mpp"
            )
        mpp_key = columns.get("mpp")
        rows = []
        for line, row in enumerate(reader, start=2):
            name = (row.get(key) or "").strip()
            if not name:
                continue
            text = (row.get(mpp_key) or "").strip() if mpp_key else ""
            try:
                mpp = float(text) if text else None
            except ValueError as exc:
                raise BadInput(f"{path} line {line}: mpp {text!r} is not a number",
                               "write the slide's microns per pixel (e.g. 0.25), or leave it empty") from exc
            slide = Path(name)
            if not slide.is_absolute() and (path.parent / slide).exists():
                slide = path.parent / slide
            rows.append((slide, mpp))
    if not rows:
        raise BadInput(f"{path.name}: no slides listed")
    return rows


def geojson_for(path: Path, given: Path | None) -> Path | None:
    """The tissue GeoJSON for one slide: the file given, or ``<stem>.geojson`` in the folder given."""
    if given is None or not Path(given).is_dir():
        return given
    candidate = Path(given) / f"{path.stem}.geojson"
    if not candidate.is_file():
        raise BadInput(
            f"{path.name}: no {candidate.name} in {given}",
            "add the slide's tissue GeoJSON or drop --tissue-geojson",
        )
    return candidate


def check_tissue_geojson(slides: list[Path], given: Path | None) -> None:
    """Read every slide's tissue GeoJSON up front, so a bad one is refused (exit 2) before any slide is cut.

    Raises:
        BadInput: a slide's GeoJSON is missing from the folder given, not JSON, or holds no polygon.
    """
    from pathotune_cli.wsi.geojson import read_polygons

    if given is None:
        return
    if not Path(given).exists():
        raise BadInput(f"--tissue-geojson {given} does not exist", "pass a QuPath GeoJSON file or a folder of them")
    for path in dict.fromkeys(geojson_for(slide, given) for slide in slides):
        if path is not None:
            read_polygons(path)

"""Inputs found one way, for every per-slide command: slide files, folders, slide lists, and the tile images among them.

- A folder is searched recursively (hidden folders and an MRXS slide's data folder are not entered).
- A slide made of several files counts once (``wsi.inputs``): the ``.dcm`` files of one DICOM series (OpenSlide
  opens the series from any of its files), an ``.mrxs`` file with its data folder, an OME-Zarr folder.
- A slide list comes from ``--slides-csv FILE`` or ``-`` among the inputs (standard input), as a CSV with a
  ``slide`` column (and an optional ``mpp``) or one path per line; a FIFO or ``/dev/stdin`` works as a file.
- Which files are tiles and which are slides: ``formats.kind_of`` (by content where the suffix cannot tell).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pathotune_cli.errors import BadInput
from pathotune_cli.formats import MPP_COLUMNS, SLIDE_COLUMNS, kind_of
from pathotune_cli.runs.per_slide.rows import SlideInput

STDIN = "-"
"""An input that stands for a slide list on standard input."""


@dataclass(frozen=True)
class Inputs:
    """What a run was given: slides (with any slides-CSV mpp) and tile images."""

    slides: list[SlideInput] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


def collect(paths: Sequence[Path], slides_csv: Path | None = None, *, tiles_as_images: bool) -> Inputs:
    """Every slide (and, with ``tiles_as_images``, every tile image) of the inputs, in the order given.

    Args:
        paths: Slide files, tile images, folders, or ``-`` for a slide list on standard input.
        slides_csv: A slide list (CSV or one path per line).
        tiles_as_images: ``predict``: tile images are classified as images. ``tile`` and ``features``: every
            image is a (one-level) slide.

    Raises:
        BadInput: A path is missing, nothing usable was found, a list is malformed, or two slides share a name.
    """
    slides: list[SlideInput] = []
    images: list[Path] = []
    for given in paths:
        if str(given) == STDIN:
            slides += read_slide_list(Path(STDIN))
            continue
        path = Path(given).expanduser()
        if not path.exists():
            raise BadInput(f"{path}: no such file or folder", "check the path")
        if path.is_dir() and not _is_zarr(path):
            found = _walk(path, tiles_as_images)
            if not found.slides and not found.images:
                raise BadInput(f"{path}: no slides or tile images in this folder (searched with its subfolders)",
                               _suffix_hint(path))
            slides += found.slides
            images += found.images
        elif tiles_as_images and kind_of(path) == "image":
            images.append(path)
        else:
            slides.append(SlideInput(path))  # named explicitly: the reader says whether it is a slide
    if slides_csv is not None:
        slides += read_slide_list(Path(slides_csv))
    slides = _one_per_slide(slides)
    _check_names(slides)
    return Inputs(slides, images)


def read_slide_list(path: Path) -> list[SlideInput]:
    """A slide list: a CSV with a ``slide`` (or ``wsi``/``path``) column and an optional ``mpp``, or one path a line.

    Relative paths are taken from the list's folder (from the working folder for standard input).

    Raises:
        BadInput: the list is missing, unreadable, has a bad mpp, or lists nothing.
    """
    text = _read_text(path)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadInput(f"{_shown(path)}: no slides listed", "write one slide path a line, or a CSV with a slide column")
    folder = Path.cwd() if str(path) == STDIN or not path.is_file() else path.parent
    header = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    if set(header) & set(SLIDE_COLUMNS):
        return _from_csv("\n".join(lines), path, folder)
    if len(header) > 1:  # columns, none of them the slide's
        raise BadInput(f"{Path(_shown(path)).name}: no 'slide' column",
                       "the first line must name the columns: slide,mpp")
    return [SlideInput(_relative(line.strip(), folder)) for line in lines]


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


def _walk(folder: Path, tiles_as_images: bool) -> Inputs:
    """A folder's slides and tile images, recursively, sorted by path; multi-file slides once (``wsi.inputs``)."""
    from pathotune_cli.formats import FLAT_IMAGE_SUFFIXES, SLIDE_SUFFIXES
    from pathotune_cli.wsi.inputs import find_slides

    slides: list[SlideInput] = []
    images: list[Path] = []
    for file in find_slides(folder, (*SLIDE_SUFFIXES, *FLAT_IMAGE_SUFFIXES)):
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        if tiles_as_images and kind_of(file) == "image":
            images.append(file)
        else:
            slides.append(SlideInput(file))
    return Inputs(slides, images)


def _suffix_hint(folder: Path) -> str:
    """What the folder holds instead, so a user sees at once that the format is the problem."""
    from collections import Counter

    found = Counter(p.suffix.lower() for p in folder.rglob("*") if p.is_file() and p.suffix)
    if not found:
        return "the folder is empty"
    common = ", ".join(f"{n} {s}" for s, n in found.most_common(3))
    return (f"it holds {common} files; slides end in .svs, .tif, .ndpi, .mrxs, .dcm, ... and tile images in "
            ".png, .jpg, .tif; convert other formats to OME-TIFF (e.g. `bfconvert`, or QuPath's export)")


_stdin: list[str] = []
"""Standard input, once read (a run lists its slides more than once: to count them, then to run them)."""


def _read_text(path: Path) -> str:
    if str(path) == STDIN:
        if not _stdin:
            _stdin.append(sys.stdin.read())
        return _stdin[0]
    if not path.exists():
        raise BadInput(f"{path}: no such slides list", "check the --slides-csv path")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a slides list", "pass the folder as an input instead")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a readable text file (UnicodeDecodeError)",
                       "save it as a UTF-8 CSV with the columns slide,mpp") from None


def _from_csv(text: str, path: Path, folder: Path) -> list[SlideInput]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip().lower(): c for c in reader.fieldnames or [] if c is not None}
        key = next((columns[c] for c in SLIDE_COLUMNS if c in columns), None)
        if key is None:
            raise BadInput(f"{Path(_shown(path)).name}: no 'slide' column",
                           "the first line must name the columns: slide,mpp")
        mpp_key = next((columns[c] for c in MPP_COLUMNS if c in columns), None)
        rows = []
        for line, row in enumerate(reader, start=2):
            name = (row.get(key) or "").strip()
            if name:
                rows.append(SlideInput(_relative(name, folder), _mpp(row.get(mpp_key) if mpp_key else "", path, line)))
    except csv.Error as exc:
        raise BadInput(f"{_shown(path)}: not a readable CSV ({exc})",
                       "save it as a UTF-8 CSV with the columns slide,mpp") from None
    if not rows:
        raise BadInput(f"{_shown(path)}: no slides listed")
    return rows


def _mpp(text: str | None, path: Path, line: int) -> float | None:
    text = (text or "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise BadInput(f"{_shown(path)} line {line}: mpp {text!r} is not a number",
                       "write the slide's microns per pixel (e.g. 0.25), or leave it empty") from None


def _relative(name: str, folder: Path) -> Path:
    slide = Path(name).expanduser()
    if not slide.is_absolute() and (folder / slide).exists():
        return folder / slide
    return slide


def _shown(path: Path) -> str:
    return "standard input" if str(path) == STDIN else str(path)


def _is_zarr(path: Path) -> bool:
    from pathotune_cli.wsi.zarr_reader import is_zarr

    return is_zarr(path)


def _one_per_slide(slides: list[SlideInput]) -> list[SlideInput]:
    """Files named one by one that make one slide (the ``.dcm`` files of a series) count once."""
    from pathotune_cli.wsi.inputs import group_slide_files

    kept = set(group_slide_files([s.path for s in slides]))
    return [s for s in slides if s.path in kept]


def _check_names(slides: list[SlideInput]) -> None:
    """Two slides with one stem would write the same output names."""
    stems: dict[str, Path] = {}
    for slide in slides:
        other = stems.setdefault(slide.stem, slide.path)
        if other != slide.path:
            raise BadInput(f"two slides share the name {slide.stem!r} ({other} and {slide.path})",
                           "rename one, or run them into different --out folders")

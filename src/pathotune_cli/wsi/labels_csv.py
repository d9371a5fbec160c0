"""``labels.csv``: labelled tiles as places on slides, so ``tune`` and ``eval`` read them from the slides themselves.

One row per labelled tile: ``slide`` (its path), ``x``, ``y`` (level-0 top-left), ``label`` (the task's class
name), then the tile's geometry, so the tile can be cut again exactly: ``patch_size_level0`` (footprint in level-0
pixels), ``tile_size`` (side as yielded), ``target_mpp``, ``level`` and ``read_size`` (the level read and how many
of its pixels), ``level0_mpp``, and ``cover`` (share of the tile its class covers). Optional columns a lab may add:
``patient`` (validation is then split by patient rather than by slide) and ``split`` (``train``, ``val``, ``test``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from pathotune_cli.config.schema import TaskPreset
    from pathotune_cli.wsi.labels import LabelRegions, TileLabels
    from pathotune_cli.wsi.plan import SlidePlan

COLUMNS = ("slide", "x", "y", "label", "patch_size_level0", "tile_size", "target_mpp", "level", "read_size",
           "level0_mpp", "cover")
REQUIRED = ("slide", "x", "y", "label")
_GEOMETRY = ("patch_size_level0", "tile_size", "level", "read_size")
_FIX = "write it with `pathotune tile --labels` (columns slide,x,y,label and the tile geometry)"


@dataclass(frozen=True)
class SlideTiles:
    """Labelled tiles read back from ``labels.csv``: where each one is and how to cut it."""

    source: Path
    slides: list[Path]
    """Each distinct slide, in first-seen order."""
    slide_index: np.ndarray
    """``(N,)`` index into ``slides`` per tile."""
    coords: np.ndarray
    """``(N, 2)`` int64 level-0 top-left x, y."""
    labels: list[str]
    """The label of each tile as written."""
    level: np.ndarray
    read_size: np.ndarray
    tile_size: np.ndarray
    footprint: np.ndarray
    target_mpp: np.ndarray
    patients: list[str] | None
    """The ``patient`` column, where the CSV has one."""
    splits: list[str | None]
    """The ``split`` column (lower case), None where empty or absent."""
    lines: np.ndarray
    """``(N,)`` CSV line of each tile, for messages."""

    def __len__(self) -> int:
        return len(self.coords)


def labelled_rows(plan: SlidePlan, tiles: TileLabels, class_names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The ``labels.csv`` rows of one slide: its labelled tiles only, in grid order.

    Args:
        plan: The slide's plan (``plan_slide``); ``tiles`` labels its ``coords``.
        tiles: ``label_tiles(regions, plan.coords, plan.grid.patch_size_level0)``.
        class_names: The task's class names, in label order.
    """
    keep = np.flatnonzero(tiles.labels >= 0)
    slide = str(Path(plan.path).absolute())  # not resolved: a link names its own slide
    grid = plan.grid
    return [
        (slide, int(plan.coords[i, 0]), int(plan.coords[i, 1]), class_names[int(tiles.labels[i])],
         grid.patch_size_level0, grid.tile_size, round(plan.target_mpp, 6), grid.level, grid.read_size,
         round(plan.mpp, 6), round(float(tiles.cover[i, tiles.labels[i]]), 4))
        for i in keep.tolist()
    ]


@dataclass(frozen=True)
class LabelledCut:
    """One slide cut with its labels: its ``labels.csv`` rows, each tile's label, and what the regions held."""

    rows: list[tuple[Any, ...]]
    tiles: TileLabels
    regions: LabelRegions

    def counts(self) -> dict[str, int]:
        """Labelled tiles per class."""
        return self.tiles.counts(self.regions.class_names)

    def warnings(self) -> list[str]:
        """Lines for the user: the one about regions that give no label, tiles under two classes, notes."""
        lines = [w for w in [self.regions.warning()] if w]
        if self.tiles.conflicted:
            lines.append(f"{self.regions.source.name}: {self.tiles.conflicted} tile(s) lie under two classes "
                         f"(each covering at least {self.tiles.min_cover:g} of the tile) and were left out")
        return lines + self.regions.notes()


def cut_labels(plan: SlidePlan, labels: str | Path, task: TaskPreset, min_cover: float | None = None) -> LabelledCut:
    """Label one planned slide's tiles from its QuPath export: what ``tile --labels`` does per slide.

    Raises:
        BadInput: a bad annotation file or a region outside the slide (``wsi.labels.read_label_regions``).
    """
    from pathotune_cli.wsi.labels import MIN_LABEL_COVER, label_tiles, read_label_regions

    regions = read_label_regions(labels, task, plan.level0_size)
    tiles = label_tiles(regions, plan.coords, plan.grid.patch_size_level0,
                        MIN_LABEL_COVER if min_cover is None else min_cover)
    return LabelledCut(labelled_rows(plan, tiles, task.class_names), tiles, regions)


def write_labels_csv(path: str | Path, rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``labels.csv`` (temporary name, then renamed) from ``labelled_rows`` of one or more slides."""
    from pathotune_cli.files import write_csv

    return write_csv(path, COLUMNS, rows)


def combine_labels_csv(parts: Iterable[str | Path], path: str | Path) -> Path:
    """One run-level ``labels.csv`` from per-slide ones (``<slide>.labels.csv``), rows in the order given."""
    rows: list[list[str]] = []
    for part in parts:
        with Path(part).open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is not None and tuple(header) != COLUMNS:
                raise BadInput(f"{part} is not a labels.csv of this version (header {','.join(header)})", _FIX)
            rows.extend(reader)
    return write_labels_csv(path, rows)


def is_labels_csv(path: str | Path) -> bool:
    """Whether ``path`` is a CSV of slide tiles (its header names ``slide``, ``x``, ``y`` and ``label``)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return False
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    names = {h.strip() for h in header}
    return set(REQUIRED) <= names and "path" not in names


def read_labels_csv(path: str | Path, option: str = "--data") -> SlideTiles:
    """Read ``labels.csv``; relative slide paths start at the CSV's folder.

    Raises:
        BadInput: unreadable, no rows, a required column missing, a value that is not a number, a split that is
            not train/val/test, or a slide that does not exist (each naming the line).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"cannot read {option} {path}: {exc}", _FIX) from None
    if not rows:
        raise BadInput(f"{option} {path} lists no tiles", _FIX)
    missing = [c for c in (*REQUIRED, *_GEOMETRY) if c not in rows[0]]
    if missing:
        raise BadInput(f"{path} has no {', '.join(repr(c) for c in missing)} column", _FIX)
    slides: dict[Path, int] = {}
    seen: dict[str, Path] = {}
    out: dict[str, list[Any]] = {k: [] for k in ("slide", "coords", "label", "level", "read", "tile", "foot", "mpp",
                                                  "patient", "split", "line")}
    for line, row in enumerate(rows, start=2):
        if not any(isinstance(v, str) and v.strip() for v in row.values()):
            continue
        raw = (row.get("slide") or "").strip()
        slide = seen[raw] if raw in seen else seen.setdefault(raw, _slide(path, line, raw))
        out["slide"].append(slides.setdefault(slide, len(slides)))
        out["coords"].append((_int(path, line, row, "x"), _int(path, line, row, "y")))
        out["label"].append((row.get("label") or "").strip())
        for key, column in (("level", "level"), ("read", "read_size"), ("tile", "tile_size"),
                            ("foot", "patch_size_level0")):
            out[key].append(_int(path, line, row, column))
        out["mpp"].append(float(row.get("target_mpp") or "nan"))
        out["patient"].append((row.get("patient") or "").strip())
        out["split"].append(_split(path, line, row))
        out["line"].append(line)
    return SlideTiles(
        path, list(slides), np.array(out["slide"], np.int64), np.array(out["coords"], np.int64).reshape(-1, 2),
        out["label"], np.array(out["level"]), np.array(out["read"]), np.array(out["tile"]), np.array(out["foot"]),
        np.array(out["mpp"]), out["patient"] if "patient" in rows[0] else None, out["split"],
        np.array(out["line"]),
    )


def _slide(path: Path, line: int, raw: str) -> Path:
    if not raw:
        raise BadInput(f"{path} line {line}: no slide", "fill in the slide column, or remove the row")
    slide = Path(raw).expanduser()
    slide = slide if slide.is_absolute() else path.parent / slide
    if not slide.is_file():
        raise BadInput(f"{path} line {line}: slide {slide} does not exist",
                       "fix the path (relative paths start at the CSV's folder), or tile the slide again")
    return slide


def _int(path: Path, line: int, row: dict[str, Any], column: str) -> int:
    value = (row.get(column) or "").strip()
    try:
        return int(float(value))
    except ValueError:
        raise BadInput(f"{path} line {line}: {column} {value!r} is not a number", _FIX) from None


def _split(path: Path, line: int, row: dict[str, Any]) -> str | None:
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in ("train", "val", "test"):
        raise BadInput(f"{path} line {line}: split '{split}' is not one of train, val, test", "fix the split column")
    return split

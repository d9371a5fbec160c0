"""Labelled regions from QuPath to labelled tiles: classes matched to a task, tiles given the class that covers them.

The rule (``tile --labels``): a tile takes a class when the regions of that class cover at least
``min_cover`` of its area (our default ``MIN_LABEL_COVER`` = 0.5: the class covering most of the tile, so a region
gives its interior tiles and the border tiles that lie mostly inside it; raise it, e.g. to 0.9, for purer tiles).
A tile that two classes each cover at least ``min_cover`` of (overlapping or nested regions) is left out and
counted, never given one of them. Regions of one class are merged first, so two overlapping Tumor regions count
once. Classes are matched to the task's through its names and aliases (case and separators aside), as tile-set
folder names are; a derived class (``Tumor: Positive``) matches its full name first, then its base class
(``Tumor``), and says so. Unclassified regions and classes the task does not know are counted and named in one
warning line, never dropped silently and never merged into a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pathotune_cli.config.schema import TaskPreset, class_matcher
from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.qupath_objects import QuPathFile, QuPathObject, read_qupath_objects

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

MIN_LABEL_COVER = 0.5
"""Our default share of a tile its class's regions must cover (``--min-label-cover``)."""
EDGE_TOLERANCE = 1.0
"""Level-0 pixels a region may reach past the slide's edge (QuPath rounds outlines to the pixel)."""
LABEL_SUFFIXES = (".geojson", ".json")


@dataclass(frozen=True)
class LabelRegions:
    """One slide's labelled regions, merged per class of the task, and what could not be used."""

    source: Path
    class_names: tuple[str, ...]
    areas: dict[int, BaseGeometry]
    """Class index -> the union of that class's regions (classes without regions are absent)."""
    regions: dict[int, int] = field(default_factory=dict)
    """Class index -> how many regions were merged into it."""
    unclassified: int = 0
    """Regions with no classification."""
    unknown: dict[str, int] = field(default_factory=dict)
    """Class names the task does not know -> how many regions."""
    derived: dict[str, str] = field(default_factory=dict)
    """Derived class names counted as their base class (``Tumor: Positive`` -> ``TUMOR``)."""
    repaired: int = 0
    """Regions whose outline crossed itself, repaired with ``shapely.make_valid``."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Objects without an area (points, lines) and TMA cores, by kind."""

    def warning(self) -> str | None:
        """One line naming every region that gives no label (unclassified, or a class the task lacks); or None."""
        parts = []
        if self.unclassified:
            parts.append(f"{self.unclassified} unclassified region{'s' if self.unclassified != 1 else ''}")
        if self.unknown:
            named = ", ".join(f"'{name}' ({n})" for name, n in sorted(self.unknown.items()))
            parts.append(f"{sum(self.unknown.values())} region(s) of classes the task does not know: {named}")
        if not parts:
            return None
        return (f"{self.source.name}: {' and '.join(parts)} give no labels (task classes: "
                f"{', '.join(self.class_names)}); classify them in QuPath or add the names as aliases in the task "
                "preset")

    def notes(self) -> list[str]:
        """Lines about what was read in a way the user may not expect (derived classes, repairs, points)."""
        lines = [f"{self.source.name}: derived class '{d}' counted as '{base}'" for d, base in self.derived.items()]
        if self.repaired:
            lines.append(f"{self.source.name}: {self.repaired} region(s) crossed themselves and were repaired "
                         "(shapely make_valid); check them in QuPath")
        if self.skipped:
            lines.append(f"{self.source.name}: left out objects without an area: "
                         + ", ".join(f"{n} {kind}" for kind, n in self.skipped.items()))
        return lines


@dataclass(frozen=True)
class TileLabels:
    """Each tile's class index (-1: no label) and how many tiles were left out because two classes cover them."""

    labels: np.ndarray
    """``(N,)`` int64 class index per tile, -1 where no class covers ``min_cover`` of it or two classes do."""
    cover: np.ndarray
    """``(N, C)`` share of each tile each class covers."""
    conflicted: int
    """Tiles left out because two classes each cover at least ``min_cover`` of them."""
    min_cover: float

    def counts(self, class_names: Sequence[str]) -> dict[str, int]:
        """Labelled tiles per class, every class listed."""
        return {name: int((self.labels == i).sum()) for i, name in enumerate(class_names)}


def read_label_regions(path: str | Path, task: TaskPreset, level0_size: tuple[int, int] | None = None) -> LabelRegions:
    """Read a QuPath GeoJSON export and match its classes to ``task``'s.

    Args:
        path: The GeoJSON file.
        task: The task whose classes (and aliases) the QuPath classes are matched to.
        level0_size: The slide's (width, height): a region reaching outside it is refused.

    Raises:
        BadInput: a bad file (see ``read_qupath_objects``), or a region outside the slide.
    """
    import shapely

    found = read_qupath_objects(path)
    if level0_size is not None:
        check_inside_slide(found, level0_size)
    match = class_matcher(task)
    parts: dict[int, list[BaseGeometry]] = {}
    unknown: dict[str, int] = {}
    derived: dict[str, str] = {}
    unclassified = 0
    for obj in found.objects:
        if not obj.names:
            unclassified += 1
            continue
        index = match(obj.class_name)
        if index is None and len(obj.names) > 1:
            index = match(obj.names[0])
            if index is not None:
                derived[obj.class_name] = task.class_names[index]
        if index is None:
            unknown[obj.class_name] = unknown.get(obj.class_name, 0) + 1
            continue
        parts.setdefault(index, []).append(obj.geometry)
    areas = {i: shapely.union_all(geoms) for i, geoms in sorted(parts.items())}
    return LabelRegions(
        found.path, tuple(task.class_names), areas, {i: len(g) for i, g in sorted(parts.items())}, unclassified,
        unknown, derived, sum(o.repaired for o in found.objects), found.skipped,
    )


def check_inside_slide(found: QuPathFile, level0_size: tuple[int, int]) -> None:
    """Refuse a region that reaches outside the slide: its coordinates belong to another slide or another unit.

    Raises:
        BadInput: naming the first such region, its bounds and the slide's size.
    """
    width, height = level0_size
    for obj in found.objects:
        x0, y0, x1, y1 = obj.geometry.bounds
        tol = EDGE_TOLERANCE
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise BadInput(
                f"{found.path}: {obj.describe()} reaches outside the slide ({width} x {height} level-0 pixels): "
                f"its bounds are x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}",
                "export the objects from this slide in QuPath (coordinates are level-0 pixels, not µm)",
            )


def label_tiles(regions: LabelRegions, coords: np.ndarray, footprint: int | tuple[int, int],
                min_cover: float = MIN_LABEL_COVER) -> TileLabels:
    """The class of each tile of a grid: the class whose regions cover at least ``min_cover`` of it.

    Args:
        regions: The slide's regions (``read_label_regions``).
        coords: ``(N, 2)`` level-0 top-left x, y of the tiles.
        footprint: Tile side (or (width, height)) in level-0 pixels.
        min_cover: Share of the tile, in (0, 1], its class must cover.

    Returns:
        ``TileLabels``; a tile two classes each cover at least ``min_cover`` of gets -1 and is counted.
    """
    if not 0 < min_cover <= 1:
        raise BadInput(f"--min-label-cover {min_cover} is out of range", "use a share in (0, 1], e.g. 0.5")
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    cover = np.zeros((len(coords), len(regions.class_names)), np.float64)
    for index, area in regions.areas.items():
        cover[:, index] = cover_fraction(area, coords, footprint)
    hits = cover >= min_cover - 1e-9
    many = hits.sum(axis=1)
    labels = np.where(many == 1, hits.argmax(axis=1), -1).astype(np.int64)
    return TileLabels(labels, cover, int((many > 1).sum()), min_cover)


def cover_fraction(area: BaseGeometry, coords: np.ndarray, footprint: int | tuple[int, int]) -> np.ndarray:
    """``(N,)`` share of each tile's area inside ``area`` (tiles at level-0 top-left ``coords``)."""
    import shapely

    w, h = (footprint, footprint) if np.isscalar(footprint) else footprint  # type: ignore[misc]
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    out = np.zeros(len(coords), np.float64)
    if not len(coords) or area.is_empty:
        return out
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + w, coords[:, 1] + h)
    tree = shapely.STRtree(boxes)
    near = tree.query(area, predicate="intersects")
    if len(near):
        shapely.prepare(area)
        inside = shapely.contains_properly(area, boxes[near])
        out[near[inside]] = 1.0
        partial = near[~inside]
        out[partial] = shapely.area(shapely.intersection(boxes[partial], area)) / float(w * h)
    return np.clip(out, 0.0, 1.0)


def labels_file_for(slide: str | Path, source: str | Path, table: dict[str, Path] | None = None) -> Path | None:
    """The labels file of one slide: ``source`` itself, the file named by stem in a folder, or a CSV's row.

    Args:
        slide: The slide's path.
        source: A GeoJSON file (one slide), a folder of ``<slide stem>.geojson`` files, or a CSV ``slide,labels``.
        table: The CSV already read by ``read_labels_table`` (slide name or stem -> file), when ``source`` is one.

    Returns:
        The file, or None when the folder or CSV has none for this slide.
    """
    slide, source = Path(slide), Path(source)
    if table is not None:
        return table.get(slide.name) or table.get(slide.stem) or table.get(str(slide))
    if source.is_dir():
        for suffix in LABEL_SUFFIXES:
            for name in (slide.stem + suffix, slide.name + suffix):
                if (source / name).is_file():
                    return source / name
        return None
    return source


def labels_for_slides(slides: Sequence[str | Path], source: str | Path,
                      option: str = "--labels") -> dict[Path, Path | None]:
    """Each slide's labels file, found before any work: a GeoJSON (one slide), a folder by stem, or a CSV.

    Args:
        slides: The slides of the run.
        source: ``--labels`` (or ``--roi``): a ``.geojson``/``.json`` file, a folder of ``<slide stem>.geojson``,
            or a ``.csv`` with columns ``slide,labels``.
        option: The option that named ``source``, for the messages.

    Returns:
        Slide -> its labels file, or None where the folder or CSV has none (the slide gets no labelled tiles).

    Raises:
        BadInput: ``source`` does not exist, or one GeoJSON file is given for several slides.
    """
    source = Path(source)
    if not source.exists():
        raise BadInput(f"{option} {source} does not exist",
                       "pass a QuPath GeoJSON export, a folder of <slide>.geojson files, or a CSV slide,labels")
    table = read_labels_table(source) if source.is_file() and source.suffix.lower() == ".csv" else None
    if source.is_file() and table is None and len(slides) > 1:
        raise BadInput(f"{option} {source} is one GeoJSON file for {len(slides)} slides",
                       "pass a folder of <slide stem>.geojson files, or a CSV with columns slide,labels")
    return {Path(s): labels_file_for(s, source, table) for s in slides}


def read_labels_table(path: str | Path) -> dict[str, Path]:
    """A CSV with columns ``slide,labels``: slide (path, name or stem) -> its GeoJSON (relative to the CSV).

    Raises:
        BadInput: unreadable, without those columns, or naming a labels file that does not exist.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"cannot read labels CSV {path}: {exc}", "pass a UTF-8 CSV with columns slide,labels") from None
    if not rows or not {"slide", "labels"} <= set(rows[0]):
        raise BadInput(f"labels CSV {path} has no slide,labels columns (or no rows)",
                       "name the columns slide,labels in the first line, one row per slide")
    table: dict[str, Path] = {}
    for line, row in enumerate(rows, start=2):
        slide, labels = (row.get("slide") or "").strip(), (row.get("labels") or "").strip()
        if not slide or not labels:
            continue
        file = Path(labels).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise BadInput(f"{path} line {line}: labels file {file} does not exist",
                           "fix the path (relative paths start at the CSV's folder)")
        for key in {slide, Path(slide).name, Path(slide).stem}:
            table[key] = file
    return table


def describe_objects(objects: Sequence[QuPathObject]) -> str:
    """``3 regions: Tumor (2), unclassified (1)`` for a note."""
    counts: dict[str, int] = {}
    for obj in objects:
        key = obj.class_name or "unclassified"
        counts[key] = counts.get(key, 0) + 1
    return f"{len(objects)} regions: " + ", ".join(f"{k} ({n})" for k, n in counts.items())

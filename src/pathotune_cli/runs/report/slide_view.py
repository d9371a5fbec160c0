"""One slide's pictures for the report.

Its thumbnail with switchable maps, the map as ``predict`` drew it, and the top tiles per class that
``--explain-top`` explained.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pathotune_cli.runs.report.images import VIEW_SIZE, Overlay, overlays, picture_uri
from pathotune_cli.runs.report.records import SlideRecord

EXPLAIN_SIZE = 320
"""Long side of an explained tile's picture in the report."""


@dataclass(frozen=True)
class ExplainedTile:
    """One tile ``--explain-top`` explained."""

    cls: str
    probability: str
    uri: str
    name: str


@dataclass(frozen=True)
class SlideView:
    """What the report shows of one slide."""

    stem: str
    thumbnail: str = ""
    """Data URI of the plain thumbnail (empty when the folder has none)."""
    size: tuple[int, int] = (0, 0)
    overlays: list[Overlay] = field(default_factory=list)
    map_picture: str = ""
    """Data URI of ``<stem>.heatmap.png`` / ``<stem>.attention.png`` as ``predict`` drew it."""
    explained: list[ExplainedTile] = field(default_factory=list)
    note: str = ""
    top_tiles: str = ""
    """Data URI of the slide-level montage of the most attended tiles."""


def slide_view(slide: SlideRecord, classes: list[str]) -> SlideView:
    """The pictures of ``slide``.

    Maps over the thumbnail need its plain thumbnail (with its level-0 size) and its tile CSV; without them the
    map picture ``predict`` drew is shown instead (with them it would repeat the maps).
    """
    from pathotune_cli.wsi.thumbnail_file import slide_thumbnail_level0_size

    explained = [ExplainedTile(e.get("class", ""), e.get("probability", ""),
                               picture_uri(Path(e["png"]), EXPLAIN_SIZE)[0], Path(e["png"]).stem)
                 for e in slide.explain]
    top = picture_uri(slide.top_tiles, VIEW_SIZE)[0] if slide.top_tiles else ""
    level0 = slide_thumbnail_level0_size(slide.thumbnail) if slide.thumbnail else None
    columns = read_tile_columns(slide.tiles_csv, classes) if slide.tiles_csv and level0 else {}
    maps = overlays(columns, classes, level0) if columns and level0 else []
    if slide.thumbnail is None or level0 is None or not maps:
        map_uri = picture_uri(slide.map_png)[0] if slide.map_png else ""
        missing = "plain thumbnail (<stem>.thumb.jpg)" if level0 is None else "readable tile CSV"
        note = (f"this folder has no {missing} of the slide: the map is shown as predict drew it" if map_uri else
                "no picture of this slide in the folder")
        return SlideView(slide.stem, map_picture=map_uri, explained=explained, note=note, top_tiles=top)
    uri, size = picture_uri(slide.thumbnail, VIEW_SIZE)
    return SlideView(slide.stem, uri, size, maps, "", explained, "", top)


def read_tile_columns(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """A per-slide tile CSV's numbers; {} when it cannot be read.

    ``x, y, w, h`` (level 0), the ``prob_<class>`` columns as one ``probs`` matrix, ``ood`` and ``attention``.
    """
    import warnings

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return {}
    where = {name: i for i, name in enumerate(header)}
    wanted = ["x", "y", "w", "h", *[f"prob_{c}" for c in classes], "ood", "attention"]
    present = [name for name in wanted if name in where]
    if not {"x", "y", "w", "h"} <= set(present):
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty CSV: no rows, no tiles
            table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[where[n] for n in present], ndmin=2)
    except (OSError, ValueError):
        return {}
    columns = {name: table[:, i] for i, name in enumerate(present)}
    probs = [f"prob_{c}" for c in classes]
    if classes and all(p in columns for p in probs):
        columns["probs"] = np.stack([columns.pop(p) for p in probs], axis=1)
    return columns

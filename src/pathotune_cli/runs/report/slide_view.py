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
    """The pictures of ``slide``: overlays need its plain thumbnail (with its level-0 size) and its tile CSV."""
    from pathotune_cli.wsi.thumbnail_file import slide_thumbnail_level0_size

    map_uri = picture_uri(slide.map_png)[0] if slide.map_png else ""
    explained = [ExplainedTile(e.get("class", ""), e.get("probability", ""),
                               picture_uri(Path(e["png"]), EXPLAIN_SIZE)[0], Path(e["png"]).stem)
                 for e in slide.explain]
    top = picture_uri(slide.top_tiles, VIEW_SIZE)[0] if slide.top_tiles else ""
    level0 = slide_thumbnail_level0_size(slide.thumbnail) if slide.thumbnail else None
    if slide.thumbnail is None or level0 is None:
        note = ("no plain thumbnail in this folder (<stem>.thumb.jpg): the map is shown as predict drew it"
                if map_uri else "no picture of this slide in the folder")
        return SlideView(slide.stem, map_picture=map_uri, explained=explained, note=note, top_tiles=top)
    uri, size = picture_uri(slide.thumbnail, VIEW_SIZE)
    columns = read_tile_columns(slide.tiles_csv, classes) if slide.tiles_csv else {}
    maps = overlays(columns, classes, level0, size) if columns else []
    note = "" if maps else "no tile CSV in this folder: the thumbnail is shown without a map"
    return SlideView(slide.stem, uri, size, maps, map_uri, explained, note, top)


def read_tile_columns(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """A per-slide tile CSV (``x, y, w, h`` and ``class, prob_*, ood`` or ``attention``) as arrays; {} if unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return {}
    where = {name: i for i, name in enumerate(header)}
    if not {"x", "y", "w", "h"} <= set(where):
        return {}
    table = np.array(rows, dtype=object).reshape(len(rows), len(header))

    def numbers(name: str) -> np.ndarray:
        return table[:, where[name]].astype(np.float64) if len(rows) else np.zeros(0)

    columns = {k: numbers(k) for k in ("x", "y", "w", "h")}
    probs = [f"prob_{c}" for c in classes]
    if classes and all(p in where for p in probs):
        columns["probs"] = np.stack([numbers(p) for p in probs], axis=1) if len(rows) else np.zeros((0, len(classes)))
    if "class" in where:
        index = {c: i for i, c in enumerate(classes)}
        columns["class"] = np.array([index.get(c, 0) for c in table[:, where["class"]]], np.int64)
    for name in ("ood", "attention"):
        if name in where:
            columns[name] = numbers(name)
    return columns

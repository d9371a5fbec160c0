"""QuPath-format GeoJSON files for tests, written the way QuPath 0.5 exports objects (File > Export objects as GeoJSON).

Every region is an axis-aligned rectangle (holes too), so a test can compute each tile's cover with plain numpy
arithmetic, independently of shapely.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

Rect = tuple[float, float, float, float]
"""x0, y0, x1, y1 in level-0 pixels."""

# On the CMU slide (2220 x 2967 level-0 pixels). Odd edges, so no tile is covered exactly half.
TUMOR = (101.0, 53.0, 1301.0, 1003.0)
STROMA_OUTER = (103.0, 1201.0, 1799.0, 2503.0)
STROMA_HOLE = (601.0, 1603.0, 1201.0, 2101.0)
STROMA_OVERLAP = (1003.0, 301.0, 1703.0, 803.0)
"""A second Stroma polygon (same MultiPolygon) overlapping the Tumor region: its tiles are under two classes."""
TUMOR_POSITIVE = (1501.0, 2601.0, 2201.0, 2951.0)
"""A derived class ``Tumor: Positive`` (written as a ``names`` list): counted as Tumor."""
UNCLASSIFIED = (11.0, 2601.0, 1003.0, 2901.0)
NECROSIS = (1851.0, 1201.0, 2201.0, 1801.0)
"""A class kather2016 does not know."""


def ring(rect: Rect) -> list[list[float]]:
    """A closed rectangle ring, counter-clockwise as QuPath writes exteriors."""
    x0, y0, x1, y1 = rect
    return [[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]


def feature(geometry: dict, classification: dict | None, object_type: str = "annotation") -> dict:
    """A Feature as QuPath writes it: a UUID id, the geometry, then properties."""
    properties: dict = {"objectType": object_type}
    if classification is not None:
        properties["classification"] = classification
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": properties}


def cmu_annotations(path: Path) -> Path:
    """Two classes (one a MultiPolygon with a hole), a derived class, an unclassified region, an unknown class."""
    features = [
        feature({"type": "Polygon", "coordinates": [ring(TUMOR)]}, {"name": "Tumor", "color": [200, 0, 0]}),
        feature({"type": "MultiPolygon", "coordinates": [[ring(STROMA_OUTER), ring(STROMA_HOLE)[::-1]],
                                                         [ring(STROMA_OVERLAP)]]},
                {"name": "Stroma", "color": [150, 200, 150]}),
        feature({"type": "Polygon", "coordinates": [ring(TUMOR_POSITIVE)]},
                {"names": ["Tumor", "Positive"], "color": [200, 50, 50]}, object_type="detection"),
        feature({"type": "Polygon", "coordinates": [ring(UNCLASSIFIED)]}, None),
        feature({"type": "Polygon", "coordinates": [ring(NECROSIS)]}, {"name": "Necrosis", "color": [50, 50, 50]}),
        feature({"type": "Point", "coordinates": [500.0, 500.0]}, {"name": "Tumor", "color": [200, 0, 0]}),
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=2))
    return path


def rect_cover(coords: np.ndarray, size: float, rect: Rect) -> np.ndarray:
    """Share of each square tile (top-left ``coords``, side ``size``) inside ``rect``, by interval arithmetic."""
    x, y = coords[:, 0].astype(float), coords[:, 1].astype(float)
    x0, y0, x1, y1 = rect
    w = np.clip(np.minimum(x + size, x1) - np.maximum(x, x0), 0, None)
    h = np.clip(np.minimum(y + size, y1) - np.maximum(y, y0), 0, None)
    return w * h / (size * size)


def expected_labels(coords: np.ndarray, size: float, min_cover: float = 0.5) -> tuple[np.ndarray, int]:
    """Each tile's kather2016 class index (TUMOR 0, STROMA 1; -1 none) and the tiles under both, from rectangles."""
    tumor = rect_cover(coords, size, TUMOR) + rect_cover(coords, size, TUMOR_POSITIVE)
    stroma_union_overlap = rect_cover(coords, size, STROMA_OVERLAP)
    # STROMA_OVERLAP lies apart from STROMA_OUTER, so the parts add up
    stroma = rect_cover(coords, size, STROMA_OUTER) - rect_cover(coords, size, STROMA_HOLE) + stroma_union_overlap
    hits = np.stack([tumor >= min_cover, stroma >= min_cover], axis=1)
    many = hits.sum(axis=1)
    return np.where(many == 1, hits.argmax(axis=1), -1), int((many > 1).sum())

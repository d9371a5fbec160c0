"""GeoJSON that QuPath opens: tissue contours, tile polygons with class and probabilities, and reading back.

Coordinates are level-0 pixels (x right, y down), which is what QuPath expects for a slide's objects. Tile
collections are written one feature at a time, so a slide with a million tiles never builds one big document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.tissue import Polygon

TISSUE_COLOR = (0, 160, 60)
UNCERTAIN_COLOR = (128, 128, 128)
"""The colour of pathotune's own ``Uncertain`` classification; ``uncertain_color`` moves off it where a class's
colour comes near it, so QuPath never shows an uncertain tile in a class's colour."""
_UNCERTAIN_FALLBACKS = ((64, 64, 64), (200, 200, 200), (0, 0, 0), (255, 255, 255))
MIN_COLOR_DISTANCE = 60.0
"""Least Euclidean RGB distance between ``Uncertain`` and any class colour (about what the eye tells apart)."""


def tissue_features(polygons: Sequence[Polygon], name: str = "Tissue") -> dict[str, Any]:
    """A FeatureCollection of tissue annotations, one Polygon feature per connected piece.

    Each feature's id (QuPath wants a UUID) is derived from its place and its coordinates, so the same slide and
    settings give the same file, byte for byte (a resumed run, a rerun).
    """
    features = []
    for index, polygon in enumerate(polygons):
        geometry = {"type": "Polygon", "coordinates": [_ring(r) for r in polygon]}
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"pathotune-tissue:{index}:{json.dumps(geometry)}")),
            "geometry": geometry,
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": list(TISSUE_COLOR)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def write_tissue_geojson(path: str | Path, polygons: Sequence[Polygon]) -> Path:
    """Write tissue contours (level-0 polygons, holes after their exterior) as a QuPath-readable file."""
    path = Path(path)
    path.write_text(json.dumps(tissue_features(polygons)))
    return path


def write_tiles_geojson(
    path: str | Path,
    coords: np.ndarray,
    size_level0: int | tuple[int, int],
    class_names: Sequence[str],
    probs: np.ndarray,
    *,
    colors: Sequence[tuple[int, int, int]] | None = None,
    object_type: str = "tile",
    measurements: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, Sequence[str]] | None = None,
    uncertain: np.ndarray | None = None,
    uncertain_name: str = "Uncertain",
) -> Path:
    """Write one Polygon feature per tile, classified by its most probable class.

    Args:
        path: Output ``.geojson`` file.
        coords: ``(N, 2)`` level-0 top-left x, y of each tile.
        size_level0: Tile side (or (width, height)) in level-0 pixels.
        class_names: Names of the C classes, in the order of ``probs``' columns.
        probs: ``(N, C)`` class probabilities.
        colors: One RGB colour per class; defaults to ``thumbnail.class_colors``.
        object_type: QuPath object type, ``tile`` (default), ``detection`` or ``annotation``.
        measurements: More numeric measurements, name to (N,) values (QuPath measurements are numbers only).
        metadata: Per-tile strings, name to N values, under ``properties.metadata`` (QuPath keeps them on
            objects that hold metadata and ignores them on others).
        uncertain: (N,) bool; these tiles get the classification ``uncertain_name`` (grey, never a class's colour:
            ``uncertain_color``) instead of their top class (their probabilities stay in the measurements).
        uncertain_name: The classification of ``uncertain`` tiles.

    Returns:
        ``path``. Each feature has ``classification`` {name, color} and ``measurements``
        {``prob_<class>``: p, ...} plus ``measurements``, and ``metadata`` where given.
    """
    from pathotune_cli.wsi.thumbnail import class_colors

    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    probs = np.asarray(probs, np.float64).reshape(len(coords), len(class_names))
    colors = list(colors) if colors is not None else class_colors(len(class_names))
    labels = probs.argmax(axis=1) if len(class_names) else np.zeros(len(coords), int)
    flagged = np.zeros(len(coords), bool) if uncertain is None else np.asarray(uncertain, bool).reshape(len(coords))
    grey = list(uncertain_color(colors))
    classes = [
        {"name": uncertain_name, "color": grey} if flagged[i]
        else {"name": class_names[k], "color": list(colors[k])}
        for i, k in enumerate(labels.tolist())
    ]
    measured = {f"prob_{name}": probs[:, i] for i, name in enumerate(class_names)}
    return write_measured_tiles(path, coords, size_level0, {**measured, **(measurements or {})}, classes,
                                object_type, metadata)


def uncertain_color(colors: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """``UNCERTAIN_COLOR``, or the first fallback grey at least ``MIN_COLOR_DISTANCE`` from every class colour."""
    for candidate in (UNCERTAIN_COLOR, *_UNCERTAIN_FALLBACKS):
        if all(color_distance(candidate, c) >= MIN_COLOR_DISTANCE for c in colors):
            return candidate
    return UNCERTAIN_COLOR


def color_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Euclidean distance between two RGB colours."""
    return float(np.linalg.norm(np.asarray(a[:3], np.float64) - np.asarray(b[:3], np.float64)))


def write_measured_tiles(
    path: str | Path,
    coords: np.ndarray,
    size_level0: int | tuple[int, int],
    measurements: Mapping[str, np.ndarray],
    classifications: Sequence[dict[str, Any] | None] | None = None,
    object_type: str = "tile",
    metadata: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write one Polygon feature per tile with its measurements (QuPath can colour tiles by any of them) and,
    where given, its classification (``{"name", "color"}``) and string metadata."""
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    w, h = (size_level0, size_level0) if isinstance(size_level0, (int, np.integer)) else size_level0
    columns = {k: np.asarray(v, np.float64).reshape(len(coords)).tolist() for k, v in measurements.items()}
    path = Path(path)
    with path.open("w") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, (x, y) in enumerate(coords.tolist()):
            properties: dict[str, Any] = {"objectType": object_type}
            if classifications is not None and classifications[i] is not None:
                properties["classification"] = classifications[i]
            properties["measurements"] = {k: round(v[i], 6) for k, v in columns.items()}
            if metadata:
                properties["metadata"] = {k: str(v[i]) for k, v in metadata.items()}
            fh.write(("," if i else "") + "\n" + json.dumps(_box_feature(x, y, w, h, properties)))
        fh.write("\n]}\n")
    return path


def _box_feature(x: int, y: int, w: int, h: int, properties: dict[str, Any]) -> dict[str, Any]:
    """A Feature with one rectangular Polygon, top-left ``(x, y)``."""
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": properties}


def read_polygons(path: str | Path) -> list[Polygon]:
    """Polygons from a GeoJSON file exported by QuPath (or any GeoJSON in level-0 pixels).

    Accepts a FeatureCollection, a list of features, a single Feature or a bare geometry; keeps Polygon and
    MultiPolygon geometries and ignores points and lines.

    Raises:
        BadInput: The file is missing, not JSON, or holds no polygon.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such GeoJSON file", "check the --tissue-geojson path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})", "export the tissue GeoJSON from QuPath again") from exc
    polygons: list[Polygon] = []
    for geometry in _geometries(document):
        kind, coordinates = geometry.get("type"), geometry.get("coordinates") or []
        parts = [coordinates] if kind == "Polygon" else coordinates if kind == "MultiPolygon" else []
        try:
            for part in parts:
                rings = [np.asarray(ring, np.float64)[:, :2] for ring in part if len(ring) >= 3]
                if rings:
                    polygons.append(rings)
        except (TypeError, ValueError, IndexError):
            raise BadInput(
                f"{path}: a {kind}'s coordinates are not rings of [x, y] numbers",
                "export the tissue GeoJSON from QuPath again",
            ) from None
    if not polygons:
        raise BadInput(
            f"{path}: no Polygon or MultiPolygon in this GeoJSON",
            "export the tissue annotations from QuPath as GeoJSON (File > Export objects)",
        )
    return polygons


def _geometries(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, list):
        return [g for item in document for g in _geometries(item)]
    if not isinstance(document, dict):
        return []
    kind = document.get("type")
    if kind == "FeatureCollection":
        return _geometries(document.get("features") or [])
    if kind == "Feature":
        return _geometries(document.get("geometry") or {})
    if kind == "GeometryCollection":
        return _geometries(document.get("geometries") or [])
    return [document] if kind in ("Polygon", "MultiPolygon") else []


def _ring(ring: np.ndarray) -> list[list[float]]:
    points = [[round(float(x), 2), round(float(y), 2)] for x, y in ring]
    if points and points[0] != points[-1]:
        points.append(points[0])
    return points

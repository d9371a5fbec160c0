"""Objects from a GeoJSON file as QuPath writes it (File > Export objects as GeoJSON), with their areas as shapely.

What QuPath writes (``qupath.lib.io.PathObjectTypeAdapters`` and ``GsonTools.PathClassTypeAdapter``, 0.4 onwards):

- the file is a ``FeatureCollection`` ("Export as FeatureCollection" ticked) or a JSON list of ``Feature`` objects;
  a single ``Feature`` is read too;
- each feature's ``geometry`` is a Polygon (rectangles, ellipses and brush strokes become polygons), a MultiPolygon,
  a LineString, a Point or MultiPoint, or a GeometryCollection; coordinates are level-0 pixels (x right, y down,
  origin top-left), holes after their exterior;
- ``properties.objectType`` is ``annotation``, ``detection``, ``tile``, ``cell``, ``tmaCore`` or ``root`` (a file
  without it is read as annotations, as QuPath does);
- ``properties.classification`` is ``{"name": "Tumor", "color": [r, g, b]}``, a derived class as
  ``{"names": ["Tumor", "Positive"], "color": [...]}`` (base class first), a bare string ``"Tumor: Positive"``, or,
  from QuPath before 0.4, ``{"name": "Positive", "colorRGB": int, "parentClass": {...}}``; no classification means
  unclassified. ``properties.name`` is the object's own name, not its class.

Only areas count here: points and lines are counted and left out, and TMA cores and the root object are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

AREA_TYPES = ("annotation", "detection", "tile", "cell")
"""Object types whose areas are read; ``tmaCore`` and ``root`` are not regions a pathologist labelled."""
_FIX = "export the objects again from QuPath (File > Export objects as GeoJSON)"


@dataclass(frozen=True)
class QuPathObject:
    """One object with an area: its classification and its geometry in level-0 pixels."""

    index: int
    """Its place in the file, from 1, for messages."""
    names: tuple[str, ...]
    """Classification names, base class first (``("Tumor", "Positive")`` for ``Tumor: Positive``); empty when
    unclassified."""
    object_type: str
    geometry: BaseGeometry
    """A valid shapely Polygon or MultiPolygon (repaired where the drawing crossed itself)."""
    repaired: bool = False
    """The drawn outline crossed itself and ``shapely.make_valid`` repaired it."""
    object_name: str | None = None
    """The object's own name in QuPath, if it has one."""

    @property
    def class_name(self) -> str:
        """The classification as QuPath shows it (``Tumor: Positive``), or ``""`` when unclassified."""
        return ": ".join(self.names)

    def describe(self) -> str:
        """``object 3 ('Tumor: Positive', annotation 'left lobe')`` for messages."""
        label = f"'{self.class_name}'" if self.names else "unclassified"
        named = f" '{self.object_name}'" if self.object_name else ""
        return f"object {self.index} ({label}, {self.object_type}{named})"


@dataclass(frozen=True)
class QuPathFile:
    """The objects with an area in one file, and how many others were left out."""

    path: Path
    objects: list[QuPathObject]
    skipped: dict[str, int]
    """What was left out and how many: ``point or line``, ``tmaCore``, ``root``."""


def read_qupath_objects(path: str | Path, option: str = "--labels") -> QuPathFile:
    """Read a QuPath GeoJSON export into objects with areas.

    A self-intersecting outline is repaired with ``shapely.make_valid`` (the object is marked ``repaired``);
    one whose repair leaves no area is refused by name.

    Args:
        path: The ``.geojson`` (or ``.json``) file.
        option: The option that named it, for the messages.

    Raises:
        BadInput: the file is missing, not JSON, not GeoJSON, an empty FeatureCollection, holds no area, has
            coordinates that are not numbers, or an outline that cannot be repaired.
    """
    path = Path(path)
    document = _load(path, option)
    features = _features(path, document)
    objects: list[QuPathObject] = []
    skipped: dict[str, int] = {}
    for index, feature in enumerate(features, start=1):
        properties = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
        object_type = str(properties.get("objectType") or properties.get("object_type") or "annotation")
        if object_type not in AREA_TYPES:
            skipped[object_type] = skipped.get(object_type, 0) + 1
            continue
        names = classification_names(properties.get("classification"))
        own = properties.get("name")
        geometry, repaired = _area(path, index, feature.get("geometry"), names, object_type)
        if geometry is None:
            skipped["point or line"] = skipped.get("point or line", 0) + 1
            continue
        own = own if isinstance(own, str) else None
        objects.append(QuPathObject(index, names, object_type, geometry, repaired, own))
    if not objects:
        left = ", ".join(f"{n} {kind}" for kind, n in skipped.items()) or "nothing"
        raise BadInput(f"{path}: no annotated area (Polygon or MultiPolygon) in this GeoJSON (it holds {left})",
                       f"draw and classify regions in QuPath, then {_FIX}")
    return QuPathFile(path, objects, skipped)


def classification_names(value: Any) -> tuple[str, ...]:
    """The names of a QuPath classification, base class first; ``()`` when unclassified.

    Reads every form QuPath writes: ``{"name"}``, ``{"names": [...]}``, a ``"A: B"`` string, and the pre-0.4
    ``{"name", "parentClass"}`` chain.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(":") if part.strip())
    if not isinstance(value, dict):
        return ()
    names = value.get("names")
    if isinstance(names, list) and names:
        return tuple(str(n).strip() for n in names if str(n).strip())
    own = value.get("name")
    parent = classification_names(value.get("parentClass")) if value.get("parentClass") else ()
    if isinstance(own, str) and own.strip():
        own_names = tuple(p.strip() for p in own.split(":") if p.strip()) if not parent else (own.strip(),)
        return parent + own_names
    return parent


def _load(path: Path, option: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInput(f"{option} {path}: no such file", "check the path of the QuPath GeoJSON export") from None
    except IsADirectoryError:
        raise BadInput(f"{option} {path} is a folder", "name the GeoJSON file, or a folder of them where allowed"
                       ) from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not GeoJSON (not UTF-8 text)", _FIX) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not GeoJSON (not valid JSON: {exc.msg} at line {exc.lineno})", _FIX) from None


def _features(path: Path, document: Any) -> list[dict[str, Any]]:
    """The features of a FeatureCollection, a list of features, or a single Feature (a bare geometry as one)."""
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise BadInput(f"{path}: a FeatureCollection without a 'features' list", _FIX)
        if not features:
            raise BadInput(f"{path}: an empty FeatureCollection (no objects)",
                           f"draw and classify regions in QuPath, then {_FIX}")
        found = features
    elif isinstance(document, dict) and document.get("type") == "Feature":
        found = [document]
    elif isinstance(document, dict) and document.get("type") in ("Polygon", "MultiPolygon", "GeometryCollection"):
        found = [{"type": "Feature", "geometry": document, "properties": {}}]
    elif isinstance(document, list) and document and all(isinstance(f, dict) for f in document):
        found = document
    elif isinstance(document, list):
        raise BadInput(f"{path}: an empty list of objects" if not document else
                       f"{path}: not GeoJSON (a list of something other than features)", _FIX)
    else:
        kind = document.get("type") if isinstance(document, dict) else type(document).__name__
        raise BadInput(f"{path}: not GeoJSON (a JSON {kind!s} where a FeatureCollection or Feature was expected)",
                       _FIX)
    wrong = next((i for i, f in enumerate(found, start=1) if f.get("type") != "Feature"), None)
    if wrong is not None:
        raise BadInput(f"{path}: item {wrong} is not a GeoJSON Feature (type {found[wrong - 1].get('type')!r})", _FIX)
    return found


def _area(path: Path, index: int, geometry: Any, names: tuple[str, ...],
          object_type: str) -> tuple[BaseGeometry | None, bool]:
    """The polygonal part of a feature's geometry (None when it has none) and whether it was repaired."""
    import shapely
    from shapely.geometry import shape

    what = f"object {index} ('{': '.join(names)}')" if names else f"object {index} (unclassified)"
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise BadInput(f"{path}: {what} has no geometry", _FIX)
    try:
        parsed = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, shapely.errors.GEOSException) as exc:
        raise BadInput(f"{path}: {what}'s coordinates are not rings of [x, y] numbers ({exc})", _FIX) from None
    area = _polygonal(parsed)
    if area is None:
        return None, False
    if area.is_valid:
        return area, False
    fixed = _polygonal(shapely.make_valid(area))
    if fixed is None or fixed.area <= 0:
        raise BadInput(f"{path}: {what}, an {object_type} outline, crosses itself and cannot be repaired (no area "
                       "left)",
                       "redraw that region in QuPath so its outline does not cross itself")
    return fixed, True


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """The Polygon and MultiPolygon parts of a geometry as one geometry (None when it has none)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, (Polygon, MultiPolygon)):
        return None if geometry.is_empty else geometry
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)

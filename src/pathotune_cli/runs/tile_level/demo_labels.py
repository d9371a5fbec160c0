"""The demo's training data as a lab has it: slides with regions classified in QuPath, cut into ``labels.csv``.

Each training slide is the demo layout (an ellipse of tissue in four class quadrants) with its own textures; its
annotation file is what QuPath's File > Export objects as GeoJSON writes for four classified polygons, one per
quadrant, with QuPath's own class names where it has one (``Immune cells`` matches the demo's ``lymphocytes``
through the preset's alias). The tiles are then cut exactly as ``tile --labels`` cuts them (``wsi.labels``).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from pathotune_cli.events import Reporter, ignore, note, warn
from pathotune_cli.files import atomic_write

TRAIN_SLIDE_SIZE = (1344, 1008)  # level-0 pixels at 0.5 µm/px: 12 x 9 demo tiles of 112 px
QUPATH_CLASSES = (("Tumor", (200, 0, 0)), ("Stroma", (150, 200, 150)), ("Immune cells", (160, 90, 160)),
                  ("Adipose", (250, 220, 160)))
"""The demo's classes as a pathologist would name them in QuPath (its default class list where it has one)."""
DEMO_MIN_COVER = 0.75
"""Purer than our default 0.5: a tile at the tissue's edge that is a third glass is left out (``--min-label-cover``)."""
_ARC_STEPS = 24


def demo_labels(folder: Path, slides: int = 3, seed: int = 0, report: Reporter = ignore) -> Path:
    """Write ``slides`` training slides, their QuPath GeoJSON exports, and ``labels.csv`` cut from them.

    Returns:
        The ``labels.csv`` path (kept as it is when it exists: a rerun reuses it).
    """
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.wsi.labels import label_tiles, read_label_regions
    from pathotune_cli.wsi.labels_csv import labelled_rows, write_labels_csv
    from pathotune_cli.wsi.plan import plan_slide

    out = folder / "labels.csv"
    if out.is_file():
        return out
    task = load_task_preset("demo")
    rows = []
    for i in range(slides):
        slide = _write_slide(folder / f"train-{i + 1}.tiff", seed + 100 + i)
        annotations = write_quadrant_annotations(folder / f"train-{i + 1}.geojson", *TRAIN_SLIDE_SIZE)
        plan = plan_slide(slide, target_mpp=0.5, tile_size=112, tissue="none", min_tissue=0)
        regions = read_label_regions(annotations, task, plan.level0_size)
        if regions.warning():
            warn(report, str(regions.warning()))
        tiles = label_tiles(regions, plan.coords, plan.grid.patch_size_level0, DEMO_MIN_COVER)
        rows += labelled_rows(plan, tiles, task.class_names)
    write_labels_csv(out, rows)
    note(report, f"cut {len(rows)} labelled tiles from {slides} annotated slides into {out}")
    return out


def write_quadrant_annotations(path: Path, width: int, height: int) -> Path:
    """A QuPath-format FeatureCollection: one classified polygon per quadrant of the demo's tissue ellipse."""
    cx, cy, rx, ry = width / 2, height / 2, 0.45 * width, 0.45 * height
    starts = (180.0, 270.0, 90.0, 0.0)  # quadrant 0 top-left ... 3 bottom-right, as demo_data.region_class
    features = []
    for (name, color), start in zip(QUPATH_CLASSES, starts, strict=True):
        arc = [[round(cx + rx * math.cos(math.radians(start + 90 * k / _ARC_STEPS)), 2),
                round(cy + ry * math.sin(math.radians(start + 90 * k / _ARC_STEPS)), 2)] for k in range(_ARC_STEPS + 1)]
        ring = [[cx, cy], *arc, [cx, cy]]
        features.append({
            "type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"pathotune-demo:{name}")),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": list(color)}},
        })
    return atomic_write(path, json.dumps({"type": "FeatureCollection", "features": features}, indent=2))


def _write_slide(path: Path, seed: int) -> Path:
    from pathotune_cli.demo_data import slide_tile
    from pathotune_cli.wsi import write_pyramid_tiff

    if path.is_file():
        return path
    width, height = TRAIN_SLIDE_SIZE

    def write(temp: Path) -> None:
        write_pyramid_tiff(temp, width, height, lambda x, y, w, h: slide_tile(x, y, w, h, width, height, seed),
                           mpp=0.5, tile=256, factor=2, min_level_size=256, quality=92)

    return atomic_write(path, write)

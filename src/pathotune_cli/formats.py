"""Which files are slides and which are tile images: one table, and the rule each command follows.

- In a labelled tile set (``tune``, ``eval``, ``export --check-data``) every image suffix of
  ``TILE_IMAGE_SUFFIXES`` is a tile, TIFF included: a lab's tiles are small files, sometimes saved as TIFF.
- Given to ``predict``, a file with a ``SLIDE_SUFFIXES`` suffix (TIFF included) is a slide: a tiled pyramid,
  or a flat strip TIFF read as a one-level slide. ``FLAT_IMAGE_SUFFIXES`` files are tile images.
- Given to ``tile``, ``FLAT_IMAGE_SUFFIXES`` files are one-level slides, cut like any other.
- A file named on the command line is tried whatever its suffix (the reader says whether it is a slide);
  in folders only these suffixes are picked up.
"""

from __future__ import annotations

from pathlib import Path

SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".dcm", ".bif", ".vms", ".vmu", ".svslide", ".qptiff",
    ".czi", ".zarr",
    ".vsi", ".isyntax", ".lif", ".nd2", ".kfb", ".sdpc", ".tmap", ".mds", ".mdsx",
)
"""Whole-slide formats: OpenSlide's, the TIFF family the direct decoder reads, CZI, OME-Zarr (a folder), and the
formats no reader handles, picked up so that each gets its one line with the conversion (``wsi.support``)
instead of going unnoticed."""
FLAT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""Flat images: tiles for ``predict``, one-level slides for ``tile``."""
TILE_IMAGE_SUFFIXES = (*FLAT_IMAGE_SUFFIXES, ".tif", ".tiff")
"""Tiles in a labelled set."""
TILE_COMMAND_SUFFIXES = frozenset(SLIDE_SUFFIXES + FLAT_IMAGE_SUFFIXES)
"""What ``tile`` picks up from a folder."""


def features_path(folder: str | Path, stem: str) -> Path | None:
    """A slide's features file in a folder: ``<stem>.h5`` (ours, TRIDENT's), or CLAM's ``h5_files/<stem>.h5``."""
    folder = Path(folder)
    for candidate in (folder / f"{stem}.h5", folder / "h5_files" / f"{stem}.h5"):
        if candidate.is_file():
            return candidate
    return None


def is_slide(path: Path) -> bool:
    """Whether ``predict`` treats ``path`` as a whole slide (by its suffix)."""
    return path.suffix.lower() in SLIDE_SUFFIXES


def is_flat_image(path: Path) -> bool:
    """Whether ``predict`` treats ``path`` as a tile image (by its suffix)."""
    return path.suffix.lower() in FLAT_IMAGE_SUFFIXES

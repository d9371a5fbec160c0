"""Which files are slides and which are tile images: one table, and the rule each command follows.

- In a labelled tile set (``tune``, ``eval``, ``export --check-data``) every image suffix of
  ``TILE_IMAGE_SUFFIXES`` is a tile, TIFF included: a lab's tiles are small files, sometimes saved as TIFF.
- For the per-slide commands, ``kind_of`` says what a file is: ``FLAT_IMAGE_SUFFIXES`` files are tile images;
  a TIFF is a tile image when it is flat (not tiled, one page) and no more than ``TILE_TIFF_MAX`` pixels a side
  (NCT-CRC-HE-100K ships its tiles so), else a slide; other ``SLIDE_SUFFIXES`` are slides, ``.dcm`` files parts
  of a DICOM series. ``predict`` classifies tile images as images; ``tile`` and ``features`` cut them as
  one-level slides.
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


TILE_TIFF_MAX = 1024
"""A flat TIFF up to this many pixels a side is a tile image; a larger one a one-level slide."""
SLIDE_COLUMNS = ("slide", "path", "wsi", "slide_id")
"""A slides CSV's slide column, by any of these names (case and spaces ignored), in every command."""
MPP_COLUMNS = ("mpp", "microns_per_pixel")
"""A slides CSV's mpp column."""


def kind_of(path: Path) -> str:
    """``image`` (a tile), ``slide``, ``dicom`` (one file of a DICOM series) or ``other`` (not picked up)."""
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        return "dicom"
    if suffix in FLAT_IMAGE_SUFFIXES:
        return "image"
    if suffix in (".tif", ".tiff"):
        return "image" if _flat_small_tiff(path) else "slide"
    return "slide" if suffix in SLIDE_SUFFIXES else "other"


def _flat_small_tiff(path: Path) -> bool:
    """Whether a TIFF is one flat page no larger than ``TILE_TIFF_MAX`` a side (unreadable: no, the reader says)."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return (len(tif.pages) == 1 and not page.is_tiled and not page.subifds
                    and max(page.shape[:2]) <= TILE_TIFF_MAX)
    except Exception:  # noqa: BLE001 - any unreadable file goes to the slide reader, which names the problem
        return False


def features_path(folder: str | Path, stem: str) -> Path | None:
    """A slide's features file in a folder: ``<stem>.h5`` (ours, TRIDENT's), or CLAM's ``h5_files/<stem>.h5``."""
    folder = Path(folder)
    for candidate in (folder / f"{stem}.h5", folder / "h5_files" / f"{stem}.h5"):
        if candidate.is_file():
            return candidate
    return None


def is_flat_image(path: Path) -> bool:
    """Whether ``path`` is a flat image by its suffix (``explain`` picks these up from folders)."""
    return path.suffix.lower() in FLAT_IMAGE_SUFFIXES

"""Pick the reader for a slide by its content: CZI by its header, OME-Zarr by its folder's metadata, the direct
TIFF decoder where the file allows it, else OpenSlide, else Pillow.

Every way a file can fail to open ends in one line that names the file and what is wrong with it; a format no
reader handles (VSI, iSyntax, ...) names the conversion that makes it readable (``wsi.support``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pathotune_cli.errors import BadInput, MissingDependency
from pathotune_cli.imaging import NotAnImage
from pathotune_cli.wsi.reader import DamagedSlide, SlideReader

Backend = Literal["auto", "tifffile", "openslide", "czi", "zarr", "image"]
BACKENDS: tuple[str, ...] = ("auto", "tifffile", "openslide", "czi", "zarr", "image")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# Formats only OpenSlide reads; without it these get the pip install line rather than "unreadable".
_OPENSLIDE_ONLY = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm"})


def open_slide(path: str | Path, backend: Backend | str = "auto") -> SlideReader:
    """Open a slide or image with the fastest reader that handles it.

    Args:
        path: A slide file (SVS, generic tiled TIFF, OME-TIFF, CZI, NDPI, MRXS, DICOM, ...), an OME-Zarr
            folder, or a flat image.
        backend: ``auto`` picks by content: a CZI header goes to pylibCZIrw, an OME-Zarr folder to zarr;
            otherwise it tries, in order, the direct tifffile decoder (tiled TIFF-family files whose levels are
            plain tiled pages, including SVS and OME-TIFF), OpenSlide, then Pillow for flat images.
            ``tifffile``, ``openslide``, ``czi``, ``zarr`` or ``image`` force one reader.

    Returns:
        An open ``SlideReader``; close it, or use it as a context manager.

    Raises:
        BadInput: The file is missing, not a slide or image, damaged (``DamagedSlide``), or of a format no
            reader handles (``UnsupportedFormat``, with the conversion).
        MissingDependency: The file needs OpenSlide (openslide-python, openslide-bin) or imagecodecs, and
            neither reader that could read it is installed.
    """
    import pathotune_cli.wsi.support as support
    from pathotune_cli.wsi.zarr_reader import is_zarr

    path = Path(path)
    if backend not in BACKENDS:
        raise BadInput(f"unknown slide backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    if path.is_dir() and (backend == "zarr" or (backend == "auto" and is_zarr(path))):
        return _open_with(path, "zarr")
    _check_file(path)
    if backend != "auto":
        return _open_with(path, backend)
    support.refuse_unreadable(path)
    return _open_auto(path)


def _open_auto(path: Path) -> SlideReader:
    """The first reader that takes the file: CZI by content, the direct TIFF decoder, OpenSlide, then Pillow."""
    from pathotune_cli.wsi.czi_reader import is_czi

    if is_czi(path):
        return _open_with(path, "czi")
    reasons: list[str] = []
    missing: MissingDependency | None = None
    if _is_tiff(path):
        from pathotune_cli.wsi.tiff_reader import TiffSlideReader

        try:
            return TiffSlideReader(path)
        except DamagedSlide:
            raise
        except MissingDependency as exc:
            missing = exc  # OpenSlide may still read it; if not, this is the answer
        except BadInput as exc:
            reasons.append(_strip_name(exc.problem, path))
    openslide_missing = False
    try:
        from pathotune_cli.wsi.openslide_reader import OpenSlideReader, import_openslide

        if import_openslide().OpenSlide.detect_format(str(path)):
            return OpenSlideReader(path)
        reasons.append("OpenSlide does not recognise it")
    except MissingDependency:
        openslide_missing = True
    if missing is not None:  # a tiled TIFF we could decode with imagecodecs: not a case for Pillow
        raise missing
    try:
        from pathotune_cli.wsi.image_reader import ImageReader

        return ImageReader(path)
    except NotAnImage as exc:  # anything else Pillow says (too large, 32-bit) is the answer itself
        reasons.append("Pillow does not recognise it" if "format" in exc.why else f"Pillow: {exc.why}")
    raise _unreadable(path, reasons, openslide_missing)


def _unreadable(path: Path, reasons: list[str], openslide_missing: bool) -> BadInput:
    """The error for a file no reader opened: OpenSlide missing where it was the reader, else what each said."""
    import pathotune_cli.wsi.support as support

    if openslide_missing and (path.suffix.lower() in _OPENSLIDE_ONLY or _is_tiff(path)):
        from pathotune_cli.wsi.openslide_reader import INSTALL

        return MissingDependency(f"{path.name}: reading this slide needs OpenSlide, which is not installed", INSTALL)
    what = f"{_describe(path)}; {'; '.join(reasons)}"
    if what.startswith("unrecognised binary"):  # a format of its own: the conversion is the way in
        return support.unreadable_line(path, what)
    return BadInput(f"{path.name}: not a slide or image pathotune can read ({what})")


def _open_with(path: Path, backend: str) -> SlideReader:
    if backend == "tifffile":
        from pathotune_cli.wsi.tiff_reader import TiffSlideReader

        return TiffSlideReader(path)
    if backend == "openslide":
        from pathotune_cli.wsi.openslide_reader import OpenSlideReader

        return OpenSlideReader(path)
    if backend == "czi":
        from pathotune_cli.wsi.czi_reader import CziSlideReader

        return CziSlideReader(path)
    if backend == "zarr":
        from pathotune_cli.wsi.zarr_reader import ZarrSlideReader

        return ZarrSlideReader(path)
    from pathotune_cli.wsi.image_reader import ImageReader

    return ImageReader(path)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInput(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise BadInput(
            f"{path}: a folder, not a slide file",
            "pass the slide file itself (for MRXS, the .mrxs; an OME-Zarr folder needs its .zattrs or zarr.json)",
        )
    if path.stat().st_size == 0:
        raise DamagedSlide(f"{path.name}: the file is empty", "copy it again from the scanner")


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) in _TIFF_MAGIC


def _describe(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(512)
    if head[:4] in _TIFF_MAGIC:
        return "a TIFF"
    text = head.decode("utf-8", errors="replace")
    if text.strip() and all(c.isprintable() or c in "\t\r\n" for c in text.rstrip("\ufffd")):
        return "it holds text"
    return "unrecognised binary data"


def _strip_name(problem: str, path: Path) -> str:
    prefix = f"{path.name}: "
    return problem[len(prefix) :] if problem.startswith(prefix) else problem

"""Which files make one slide: a DICOM WSI series is many ``.dcm`` files, an MRXS a file and its data folder,
an OME-Zarr a folder of chunk files. The input walk hands every file it found to ``group_slide_files`` and
gets one path per slide back.

DICOM files are grouped by their folder and SeriesInstanceUID (0020,000E), read from the file header with a
small parser (no pydicom; one header read per file, so a folder of thousands stays linear). OpenSlide opens
the whole series from any one of its files, so the first file of each series, by name, stands for it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

_DICM_OFFSET = 128
_HEADER_BYTES = 1 << 18  # SeriesInstanceUID sits in the first few kB; 256 kB covers long sequences before it
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SERIES_UID = (0x0020, 0x000E)
_IMPLICIT_LE = "1.2.840.10008.1.2"
_ITEM, _ITEM_END, _SEQ_END = 0xE000, 0xE00D, 0xE0DD
_UNDEFINED = 0xFFFFFFFF


def group_slide_files(paths: Iterable[str | Path]) -> list[Path]:
    """One path per slide, in the order the slides were first met.

    - the files of one DICOM WSI series (same folder, same SeriesInstanceUID) are one slide: its first file
      by name;
    - files inside an MRXS slide's data folder (``slide/`` beside ``slide.mrxs``) belong to the ``.mrxs``;
    - files inside an OME-Zarr folder (``slide.zarr/...``) are that folder.

    Everything else passes through unchanged.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    series: dict[tuple[Path, str], int] = {}  # (folder, series UID) -> index in ``out``
    for raw in paths:
        path = Path(raw)
        zarr_root = _zarr_ancestor(path)
        if zarr_root is not None:
            path = zarr_root
        elif _inside_mrxs_data(path):
            continue
        if path in seen:
            continue
        uid = dicom_series_uid(path) if path.is_file() and path.suffix.lower() in (".dcm", "") else None
        if uid is not None:
            key = (path.parent, uid)
            if key in series:
                if path.name < out[series[key]].name:  # the series' first file by name stands for it
                    seen.discard(out[series[key]])
                    out[series[key]] = path
                    seen.add(path)
                continue
            series[key] = len(out)
        seen.add(path)
        out.append(path)
    return out


def dicom_series_uid(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM file (Part 10: preamble, ``DICM``), or None when it is not one."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEADER_BYTES)
    except OSError:
        return None
    if head[_DICM_OFFSET : _DICM_OFFSET + 4] != b"DICM":
        return None
    try:
        return _find_series_uid(head, _DICM_OFFSET + 4)
    except (struct.error, IndexError, ValueError):
        return None


def _find_series_uid(data: bytes, pos: int) -> str | None:
    """Walk the file meta group (explicit VR) and the top-level dataset up to group 0020."""
    implicit = False
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        explicit = group == 0x0002 or not implicit
        pos, length, _ = _element_header(data, pos, explicit)
        if (group, element) == _SERIES_UID:
            return data[pos : pos + length].rstrip(b"\x00 ").decode("ascii")
        if group > _SERIES_UID[0]:
            return None
        if (group, element) == (0x0002, 0x0010):
            implicit = data[pos : pos + length].rstrip(b"\x00 ").decode("ascii") == _IMPLICIT_LE
        pos = _skip_sequence(data, pos, explicit) if length == _UNDEFINED else pos + length
    return None


def _element_header(data: bytes, pos: int, explicit: bool) -> tuple[int, int, bytes]:
    """(value start, value length, VR) of the element whose tag starts at ``pos``."""
    if not explicit:
        return pos + 8, struct.unpack_from("<I", data, pos + 4)[0], b""
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return pos + 12, struct.unpack_from("<I", data, pos + 8)[0], vr
    return pos + 8, struct.unpack_from("<H", data, pos + 6)[0], vr


def _skip_sequence(data: bytes, pos: int, explicit: bool) -> int:
    """The position after an undefined-length sequence (or item) starting at ``pos``."""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group == 0xFFFE:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
            if element == _SEQ_END:
                return pos
            if element == _ITEM and length == _UNDEFINED:
                pos = _skip_item(data, pos, explicit)
            elif element == _ITEM:
                pos += length
            continue
        raise ValueError("malformed sequence")
    raise ValueError("sequence runs past the header read")


def _skip_item(data: bytes, pos: int, explicit: bool) -> int:
    """The position after an undefined-length item's elements and its delimiter."""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if (group, element) == (0xFFFE, _ITEM_END):
            return pos + 8
        pos, length, _ = _element_header(data, pos, explicit)
        pos = _skip_sequence(data, pos, explicit) if length == _UNDEFINED else pos + length
    raise ValueError("item runs past the header read")


def _zarr_ancestor(path: Path) -> Path | None:
    """The outermost ``*.zarr`` folder ``path`` is (or lies in), or None."""
    for candidate in reversed([path, *path.parents]):
        if candidate.suffix.lower() == ".zarr" and candidate.is_dir():
            return candidate
    return None


def _inside_mrxs_data(path: Path) -> bool:
    """Whether ``path`` lies in an MRXS data folder (a folder with ``Slidedat.ini`` beside ``<folder>.mrxs``)."""
    for folder in path.parents:
        if (folder / "Slidedat.ini").is_file() and folder.with_name(folder.name + ".mrxs").is_file():
            return True
    return False


def find_slides(folder: str | Path, suffixes: Iterable[str], *, recursive: bool = True) -> list[Path]:
    """The slides in ``folder``: files with one of ``suffixes`` and OME-Zarr folders (never walked into), grouped
    by ``group_slide_files``, sorted by path.

    Args:
        folder: Where to look.
        suffixes: Lower-case name endings that mark a slide (e.g. ``formats.SLIDE_SUFFIXES``); ``.zarr`` in it
            picks up OME-Zarr folders.
        recursive: Walk sub-folders too.
    """
    wanted = tuple(s.lower() for s in suffixes)
    found: list[Path] = []
    stack = [Path(folder)]
    while stack:
        here = stack.pop()
        for entry in sorted(here.iterdir()):
            name = entry.name.lower()
            if entry.is_dir():
                if name.endswith(".zarr"):
                    if ".zarr" in wanted:
                        found.append(entry)
                elif recursive:
                    stack.append(entry)
            elif name.endswith(wanted) and not name.startswith("."):
                found.append(entry)
    return sorted(group_slide_files(found))


_ZARR_METADATA = frozenset({"zarr.json", ".zattrs", ".zarray", ".zgroup"})
_ZARR_DEPTH = 3  # root, image group (bioformats2raw ``0/``), dataset: chunk folders below are not walked


def identity_files(path: str | Path) -> list[Path]:
    """The files whose bytes stand for a slide when ``--resume`` asks whether it changed.

    A plain file is itself; an OME-Zarr folder its metadata files (root to datasets, not the chunks); a DICOM
    series every file of the series; an MRXS file with its ``Slidedat.ini``.
    """
    import os

    path = Path(path)
    if path.is_dir():
        found = []
        for here, folders, files in os.walk(path):
            depth = len(Path(here).relative_to(path).parts)
            folders[:] = sorted(folders) if depth < _ZARR_DEPTH else []
            found += [Path(here) / name for name in sorted(files) if name in _ZARR_METADATA]
        return found
    if path.suffix.lower() == ".mrxs":
        index = path.with_suffix("") / "Slidedat.ini"
        return [path, index] if index.is_file() else [path]
    uid = dicom_series_uid(path) if path.suffix.lower() in (".dcm", "") else None
    if uid is None:
        return [path]
    return sorted(p for p in path.parent.iterdir() if p.is_file() and dicom_series_uid(p) == uid)

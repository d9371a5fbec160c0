"""Which slide formats this install reads, through which package, and what to do with the ones it cannot.

One table, read by ``doctor`` (what this install reads and which package adds the rest) and by ``open_slide``
(the one line a format no reader handles gets: the format, the package if one would read it, and the
conversion that makes it readable).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from pathotune_cli.errors import BadInput

CONVERT = (
    "convert it to a pyramidal OME-TIFF first: `bfconvert -pyramid-resolutions 4 -pyramid-scale 2 -tilex 512 "
    "-tiley 512 -compression JPEG {name} {stem}.ome.tif` (Bio-Formats command-line tools) or QuPath's "
    "File > Export images > OME TIFF, then pass the .ome.tif"
)
_BIOFORMATS = "bfconvert, or QuPath's OME TIFF export"


@dataclass(frozen=True)
class SlideFormat:
    """A slide format and what reads it."""

    name: str
    """What labs call it."""
    suffixes: tuple[str, ...]
    """File (or folder) name endings."""
    reader: str
    """The ``SlideReader`` backend that reads it, or ``""`` when none does."""
    modules: tuple[str, ...]
    """Python modules that reader needs (all of them)."""
    install: str
    """The ``pip install`` that adds them (core dependencies: the README's set-up installs them)."""
    convert: str = ""
    """For a format no reader handles: the tool that converts it, when Bio-Formats (``bfconvert``) does not."""


FORMATS: tuple[SlideFormat, ...] = (
    SlideFormat("Aperio SVS", (".svs",), "tifffile", ("tifffile", "imagecodecs"), "pip install tifffile imagecodecs"),
    SlideFormat("generic tiled TIFF", (".tif", ".tiff"), "tifffile", ("tifffile", "imagecodecs"),
                "pip install tifffile imagecodecs"),
    SlideFormat("OME-TIFF", (".ome.tif", ".ome.tiff"), "tifffile", ("tifffile", "imagecodecs"),
                "pip install tifffile imagecodecs"),
    SlideFormat("Hamamatsu NDPI/VMS", (".ndpi", ".vms", ".vmu"), "openslide", ("openslide",),
                "pip install openslide-python openslide-bin"),
    SlideFormat("3DHISTECH MRXS", (".mrxs",), "openslide", ("openslide",),
                "pip install openslide-python openslide-bin"),
    SlideFormat("Leica SCN", (".scn",), "openslide", ("openslide",), "pip install openslide-python openslide-bin"),
    SlideFormat("Ventana BIF", (".bif",), "openslide", ("openslide",), "pip install openslide-python openslide-bin"),
    SlideFormat("Sakura SVSLIDE", (".svslide",), "openslide", ("openslide",),
                "pip install openslide-python openslide-bin"),
    SlideFormat("DICOM WSI", (".dcm",), "openslide", ("openslide",), "pip install openslide-python openslide-bin"),
    SlideFormat("Zeiss CZI", (".czi",), "czi", ("pylibCZIrw",), "pip install pylibCZIrw"),
    SlideFormat("OME-Zarr", (".zarr", ".ome.zarr"), "zarr", ("zarr",), "pip install zarr"),
    SlideFormat("flat image (PNG, JPEG)", (".png", ".jpg", ".jpeg", ".bmp", ".webp"), "image", ("PIL",),
                "pip install pillow"),
    # Formats no reader here handles: each gets the conversion.
    SlideFormat("Olympus/Evident VSI", (".vsi", ".ets"), "", (), ""),
    SlideFormat("Leica LIF", (".lif",), "", (), ""),
    SlideFormat("Nikon ND2", (".nd2",), "", (), ""),
    SlideFormat("Philips iSyntax", (".isyntax",), "", (), "",
                "Philips' iSyntax SDK or Glencoe's isyntax2raw + raw2ometiff to write an OME-TIFF"),
    SlideFormat("KFBio KFB", (".kfb",), "", (), "", "the scanner vendor's converter to write an SVS or TIFF"),
    SlideFormat("SQRAY SDPC", (".sdpc",), "", (), "", "the scanner vendor's converter to write an SVS or TIFF"),
    SlideFormat("UNIC TMAP", (".tmap",), "", (), "", "the scanner vendor's converter to write an SVS or TIFF"),
    SlideFormat("Motic MDS", (".mds", ".mdsx"), "", (), "", "the scanner vendor's converter to write an SVS or TIFF"),
)
"""Every format pathotune knows by name, read or not."""


class UnsupportedFormat(BadInput):
    """A slide format no reader of this install handles; the line names the conversion."""


def format_of(path: str | Path) -> SlideFormat | None:
    """The format whose suffix ``path`` ends with (the longest match: ``.ome.tif`` before ``.tif``), or None."""
    name = Path(path).name.lower()
    matches = [(len(s), f) for f in FORMATS for s in f.suffixes if name.endswith(s)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def installed(fmt: SlideFormat) -> bool:
    """Whether every module ``fmt``'s reader needs can be imported here (found, not imported)."""
    return bool(fmt.reader) and all(importlib.util.find_spec(m) is not None for m in fmt.modules)


def readable_formats() -> list[dict[str, str | bool]]:
    """For ``doctor``: each format, whether this install reads it, and how to add it or convert it."""
    rows: list[dict[str, str | bool]] = []
    for fmt in FORMATS:
        reads = installed(fmt)
        how = "" if reads else fmt.install or f"no reader: convert it ({fmt.convert or _BIOFORMATS})"
        rows.append({"format": fmt.name, "suffixes": " ".join(fmt.suffixes), "reader": fmt.reader or "none",
                     "reads": reads, "add": how})
    return rows


def refuse_unreadable(path: Path) -> None:
    """Raise ``UnsupportedFormat`` for a file of a format no reader here handles (by its name); else return."""
    fmt = format_of(path)
    if fmt is None or fmt.reader:
        return
    fix = f"convert it with {fmt.convert}" if fmt.convert else CONVERT.format(name=path.name, stem=_stem(path))
    raise UnsupportedFormat(f"{path.name}: {fmt.name} is a slide format pathotune cannot read", fix)


def unreadable_line(path: Path, what: str) -> UnsupportedFormat:
    """The error for a file no reader recognised (``what`` says what it looked like), with the conversion."""
    return UnsupportedFormat(f"{path.name}: not a slide or image pathotune can read ({what})",
                             CONVERT.format(name=path.name, stem=_stem(path)))


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(path.suffix)] if path.suffix else name

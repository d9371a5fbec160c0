"""Microns per pixel: supplied by the lab, else read from the file, else a stated default; never guessed.

The order is the slides CSV (``slide,mpp``: labs write that column because a slide's metadata is missing or
wrong), then the slide's metadata, then ``--default-mpp``. Every output records which one was used as
``mpp_source`` (``csv``, ``metadata`` or ``default``). A value outside what a microscope scan can be (the 72 dpi
a TIFF writer stores by default is 352.8 µm/px) counts as absent.
"""

from __future__ import annotations

import re

from pathotune_cli.errors import BadInput

# Scans run from ~0.1 µm/px (100x) to ~20 µm/px (a 0.5x overview); beyond this range a value is a placeholder.
PLAUSIBLE_MPP = (0.02, 40.0)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_APERIO_MAG = re.compile(r"\|\s*AppMag\s*=\s*([0-9.eE+-]+)")
DISAGREEMENT = 0.10
"""A CSV mpp more than 10% away from the file's own is worth a warning: one of the two is wrong."""
# TIFF ResolutionUnit: 1 none, 2 inch, 3 centimetre.
_MICRONS_PER_UNIT = {2: 25_400.0, 3: 10_000.0}


def plausible(mpp: float | None) -> bool:
    """Whether ``mpp`` can be a microscope scan's resolution (not None, not a placeholder)."""
    return mpp is not None and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def mpp_from_resolution(resolution: float | tuple[int, int] | None, unit: int | None) -> float | None:
    """Microns per pixel from a TIFF XResolution value and ResolutionUnit, or None when unusable.

    Args:
        resolution: Pixels per unit, as a float or the TIFF rational ``(numerator, denominator)``.
        unit: TIFF ResolutionUnit (2 inch, 3 centimetre); 1 (no unit) or None gives None.
    """
    if resolution is None or unit not in _MICRONS_PER_UNIT:
        return None
    if isinstance(resolution, tuple):
        num, den = resolution
        if not num or not den:
            return None
        resolution = num / den
    if resolution <= 0:
        return None
    return _MICRONS_PER_UNIT[int(unit)] / float(resolution)


# OME and NGFF length units (OME-XML symbols and NGFF names) in microns.
_MICRONS = {
    "m": 1e6, "meter": 1e6, "cm": 1e4, "centimeter": 1e4, "mm": 1e3, "millimeter": 1e3, "µm": 1.0, "um": 1.0,
    "\u03bcm": 1.0, "micrometer": 1.0, "micron": 1.0, "nm": 1e-3, "nanometer": 1e-3,
}


def to_microns(value: float | str | None, unit: str | None) -> float | None:
    """A physical pixel size in ``unit`` (OME-XML symbol or NGFF name; None means microns) as microns, or None."""
    try:
        size = float(value) if value is not None else None
    except ValueError:
        return None
    factor = _MICRONS.get((unit or "µm").strip().lower())
    if size is None or factor is None or size <= 0:
        return None
    return size * factor


def ome_mpp(xml: str | None) -> float | None:
    """Microns per pixel of the first image of an OME-XML document (``Pixels/@PhysicalSizeX``), or None."""
    import xml.etree.ElementTree as ET

    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    return to_microns(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))


def aperio_mpp(description: str | None) -> float | None:
    """The ``MPP = 0.499`` field of an Aperio ImageDescription, or None."""
    return _aperio_field(_APERIO_MPP, description)


def aperio_magnification(description: str | None) -> float | None:
    """The ``AppMag = 20`` field of an Aperio ImageDescription, or None."""
    return _aperio_field(_APERIO_MAG, description)


def resolve_mpp(
    slide_name: str,
    metadata_mpp: float | None,
    *,
    csv_mpp: float | None = None,
    default_mpp: float | None = None,
) -> tuple[float, str]:
    """Pick the level-0 mpp of a slide and say where it came from.

    Args:
        slide_name: File name used in messages.
        metadata_mpp: What the reader found in the file (``SlideReader.mpp``), possibly None or a placeholder.
        csv_mpp: The slide's ``mpp`` from the slides CSV, if any; it wins over the metadata.
        default_mpp: ``--default-mpp``, used only when neither the CSV nor the metadata gives one.

    Returns:
        ``(mpp, source)`` with source ``csv``, ``metadata`` or ``default``.

    Raises:
        BadInput: A supplied value is not a scan's resolution, or no plausible value anywhere; the message says
            how to supply one.
    """
    low, high = PLAUSIBLE_MPP
    for value, source in ((csv_mpp, "csv"), (metadata_mpp, "metadata"), (default_mpp, "default")):
        if value is None:
            continue
        if plausible(value):
            return float(value), source
        if source != "metadata":  # a placeholder in the file counts as absent; a user's value is a mistake
            raise BadInput(
                f"{slide_name}: {source} mpp {value:g} is outside {low}-{high} µm/px",
                "give the scan's microns per pixel (about 0.25 at 40x, 0.5 at 20x)",
            )
    stated = f" (the file states {metadata_mpp:.5g} µm/px, a placeholder)" if metadata_mpp else ""
    raise BadInput(
        f"{slide_name}: no microns-per-pixel in the slide's metadata{stated}",
        "pass --default-mpp 0.25 (for example) or add an mpp column to the slides CSV (slide,mpp)",
    )


def mpp_disagreement(slide_name: str, csv_mpp: float | None, metadata_mpp: float | None) -> str | None:
    """A warning when the slides CSV and the file state mpp values more than ``DISAGREEMENT`` apart, else None."""
    if csv_mpp is None or not plausible(metadata_mpp) or not plausible(csv_mpp):
        return None
    assert metadata_mpp is not None
    if abs(csv_mpp - metadata_mpp) <= DISAGREEMENT * metadata_mpp:
        return None
    return (
        f"{slide_name}: the slides CSV says mpp {csv_mpp:.4g} but the file says {metadata_mpp:.4g}; "
        "using the CSV's value (drop it from the CSV to use the file's)"
    )


def _aperio_field(pattern: re.Pattern[str], description: str | None) -> float | None:
    if not description or not description.startswith("Aperio"):
        return None
    match = pattern.search(description)
    if not match:
        return None
    try:
        value = float(match.group(1))
    except ValueError:
        return None
    return value if value > 0 else None

"""mpp: read where the file states it, else supplied, never guessed; placeholders count as absent."""

from __future__ import annotations

import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi.mpp import (
    aperio_magnification,
    aperio_mpp,
    mpp_disagreement,
    mpp_from_resolution,
    resolve_mpp,
)

APERIO = (
    "Aperio Image Library v11.2.1 \r\n46000x32914 [0,0 46000x32914] (240x240) JPEG/RGB Q=30"
    "|AppMag = 20|MPP = 0.4990"
)


def test_aperio_description_fields() -> None:
    assert aperio_mpp(APERIO) == pytest.approx(0.499)
    assert aperio_magnification(APERIO) == 20
    assert aperio_mpp("pathotune-derived") is None
    assert aperio_mpp("Aperio Image Library|AppMag = 40") is None


def test_resolution_tags_in_centimetres_and_inches() -> None:
    assert mpp_from_resolution((10_000_000, 499), 3) == pytest.approx(0.499)
    assert mpp_from_resolution(101_600.0, 2) == pytest.approx(0.25)
    assert mpp_from_resolution((1, 1), 1) is None  # no unit
    assert mpp_from_resolution(None, 3) is None
    assert mpp_from_resolution((0, 1), 3) is None


def test_the_csv_comes_first_then_metadata_then_default() -> None:
    assert resolve_mpp("a.svs", 0.499, csv_mpp=0.25, default_mpp=0.3) == (0.25, "csv")
    assert resolve_mpp("a.svs", 0.499, default_mpp=0.25) == (0.499, "metadata")
    assert resolve_mpp("a.tif", None, csv_mpp=0.5, default_mpp=0.25) == (0.5, "csv")
    assert resolve_mpp("a.tif", None, default_mpp=0.25) == (0.25, "default")


def test_a_csv_mpp_far_from_the_files_own_gets_a_warning() -> None:
    line = mpp_disagreement("cmu.svs", 0.25, 0.499)
    assert line is not None and "cmu.svs" in line and "0.25" in line and "0.499" in line and "CSV" in line
    assert mpp_disagreement("cmu.svs", 0.52, 0.499) is None  # within 10%
    assert mpp_disagreement("cmu.svs", None, 0.499) is None
    assert mpp_disagreement("kidney.tif", 0.5, None) is None  # nothing to disagree with


def test_placeholder_resolution_is_not_an_mpp() -> None:
    # 72 dpi, the TIFF writers' default, is 352.8 µm/px: treated as absent, never used.
    assert resolve_mpp("boxes.tiff", 352.78, default_mpp=0.5) == (0.5, "default")
    with pytest.raises(BadInput, match=r"boxes.tiff: no microns-per-pixel .* 352.78 µm/px, a placeholder"):
        resolve_mpp("boxes.tiff", 352.78)


def test_slide_without_mpp_says_how_to_supply_it() -> None:
    with pytest.raises(BadInput) as info:
        resolve_mpp("kidney.tif", None)
    line = info.value.one_line()
    assert line.startswith("kidney.tif: no microns-per-pixel in the slide's metadata")
    assert "--default-mpp" in line and "mpp column to the slides CSV" in line
    assert "\n" not in line


def test_an_implausible_supplied_mpp_is_refused() -> None:
    with pytest.raises(BadInput, match="csv mpp 500 is outside"):
        resolve_mpp("a.tif", None, csv_mpp=500)

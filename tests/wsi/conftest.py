"""Fixtures for the slide layer: the real slides beside the checkout and small generated pyramids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testdata import SLIDES
from testdata import require_data as need


@pytest.fixture
def cmu_svs() -> Path:
    """CMU-1-Small-Region: real H&E, Aperio SVS, one level, 2220 x 2967 at 0.499 µm/px."""
    return need(SLIDES / "cmu-1-small-region.svs")


@pytest.fixture
def cmu_pyramid() -> Path:
    """The same region rebuilt as a 4-level generic JPEG-tiled TIFF (re-encoded: YCbCr 4:2:0)."""
    return need(SLIDES / "cmu-1-small-region-pyramid.tiff")


@pytest.fixture
def fixtures_dir() -> Path:
    """openslide-python's fixtures: boxes.tiff, small.svs, boxes_0.dcm, boxes_1.dcm."""
    folder = need(SLIDES / "fixtures")
    for name in ("boxes.tiff", "small.svs", "boxes_0.dcm", "boxes_1.dcm"):
        need(folder / name)
    return folder


@pytest.fixture
def kidney_tif() -> Path:
    """A real kidney image stored as a flat strip TIFF (OpenSlide refuses it), no mpp."""
    return need(SLIDES / "unsupported" / "kidney-48-5.tif")


@pytest.fixture
def truncated_svs(cmu_svs: Path, tmp_path: Path) -> Path:
    """The CMU SVS cut to half its bytes."""
    data = cmu_svs.read_bytes()
    path = tmp_path / "truncated.svs"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def text_svs(tmp_path: Path) -> Path:
    """A text file renamed .svs."""
    path = tmp_path / "notes.svs"
    path.write_text("patient list\nthis is not a slide\n")
    return path


def stripes(x: int, y: int, w: int, h: int) -> np.ndarray:
    """A deterministic level-0 pattern: a pink band of 'tissue' across the middle of a 4096-wide slide."""
    out = np.full((h, w, 3), 245, np.uint8)
    xx = np.arange(x, x + w)
    yy = np.arange(y, y + h)[:, None]
    band = (yy >= 1000) & (yy < 2000) & (xx[None, :] >= 500) & (xx[None, :] < 3500)
    out[band] = (200, 110, 170)
    out[..., 1] = np.where(band, 110 + ((xx[None, :] // 8 + yy // 8) % 2) * 20, out[..., 1])
    return out


@pytest.fixture
def stripes_fn():
    """The tile function ``small_pyramid`` was drawn from."""
    return stripes


@pytest.fixture(scope="session")
def small_pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 4096 x 3072 generic pyramid at 0.25 µm/px with one band of tissue."""
    from pathotune_cli.wsi.synthetic import write_pyramid_tiff

    path = tmp_path_factory.mktemp("pyr") / "band.tiff"
    return write_pyramid_tiff(path, 4096, 3072, stripes, mpp=0.25, factor=2, min_level_size=400)


@pytest.fixture(scope="session")
def cmu_region() -> np.ndarray:
    """1024 x 1536 px of the real CMU H&E slide (0.499 µm/px): what every generated format is written from."""
    from slide_files import cmu_rgb

    return cmu_rgb()


@pytest.fixture(scope="session")
def format_slides(tmp_path_factory: pytest.TempPathFactory, cmu_region: np.ndarray) -> dict[str, Path]:
    """The CMU region as CZI (pylibCZIrw), OME-TIFF (tifffile) and OME-Zarr (ome-zarr-py), mpp in each's metadata."""
    from slide_files import write_czi, write_ome_tiff, write_ome_zarr

    folder = tmp_path_factory.mktemp("formats")
    return {
        "czi": write_czi(folder / "cmu.czi", cmu_region),
        "ome-tiff": write_ome_tiff(folder / "cmu.ome.tif", cmu_region),
        "ome-zarr": write_ome_zarr(folder / "cmu.zarr", cmu_region),
    }


DAMAGED_TILES = [5, 6]
"""Level-0 stored tiles (256 px, 4 across) of ``damaged_slide`` whose JPEG data is cut short."""


@pytest.fixture(scope="session")
def damaged_slide(tmp_path_factory: pytest.TempPathFactory, cmu_region: np.ndarray) -> Path:
    """The CMU region as a 3-level generic JPEG pyramid whose level-0 tiles 5 and 6 do not decode."""
    from slide_files import damaged_pyramid

    return damaged_pyramid(tmp_path_factory.mktemp("damaged") / "damaged.tiff", cmu_region, DAMAGED_TILES)

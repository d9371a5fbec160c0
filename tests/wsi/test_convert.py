"""``convert_slide``: any readable slide to a pyramidal generic TIFF that OpenSlide opens with the same size and mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.wsi import open_slide
from pathotune_cli.wsi.convert import SpillStore, convert_slide
from pathotune_cli.wsi.reader import DamagedSlide, rgba_to_rgb

# The source (lossless CZI) re-encoded as JPEG q90, YCbCr 4:2:0: on this H&E region 4.9 grey levels on average,
# PSNR 31 dB; a misplaced tile or swapped channels would be tens of levels off.
JPEG_MEAN = 6.0
JPEG_PSNR_DB = 29.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _openslide(path: Path):
    import openslide

    return openslide.OpenSlide(str(path))


def test_a_czi_converts_to_a_tiff_openslide_opens_with_its_size_and_mpp(
    format_slides: dict[str, Path], cmu_region: np.ndarray, tmp_path: Path
) -> None:
    result = convert_slide(format_slides["czi"], tmp_path / "out" / "cmu.tiff")
    assert result.backend == "czi" and result.compression == "jpeg" and result.tiles_damaged == 0
    assert result.level_dimensions[:3] == ((1024, 1536), (512, 768), (256, 384))
    with _openslide(result.path) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.dimensions == (1024, 1536)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.499, rel=1e-4)
        assert slide.level_count == len(result.level_dimensions) >= 3
        level0 = rgba_to_rgb(np.asarray(slide.read_region((0, 0), 0, (1024, 1536))))
        half = rgba_to_rgb(np.asarray(slide.read_region((0, 0), 1, (512, 768))))
    assert np.abs(level0.astype(np.int16) - cmu_region).mean() < JPEG_MEAN
    assert _psnr(level0, cmu_region) > JPEG_PSNR_DB
    assert np.abs(half.astype(np.int16) - cmu_region[::2, ::2]).mean() < 12  # box-averaged, not sampled
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cmu.tiff"]  # no temporary left behind


def test_lossless_keeps_every_level0_pixel(format_slides: dict[str, Path], cmu_region: np.ndarray,
                                           tmp_path: Path) -> None:
    result = convert_slide(format_slides["ome-zarr"], tmp_path / "cmu.tiff", lossless=True)
    assert result.compression == "zlib"
    with open_slide(result.path) as reader:
        assert reader.backend == "tifffile" and reader.mpp == pytest.approx(0.499)
        assert np.array_equal(reader.read_region(0, 0, 0, 1024, 1536), cmu_region)


def test_a_damaged_tile_is_filled_from_a_coarser_level_and_counted(damaged_slide: Path, tmp_path: Path) -> None:
    result = convert_slide(damaged_slide, tmp_path / "fixed.tiff", max_damaged=0.2)
    assert result.tiles_damaged == 2
    with _openslide(result.path) as slide:  # the output decodes everywhere
        assert np.asarray(slide.read_region((256, 256), 0, (512, 256))).shape == (256, 512, 4)


def test_damage_above_the_limit_fails_and_leaves_no_file(damaged_slide: Path, tmp_path: Path) -> None:
    with pytest.raises(DamagedSlide, match=r"damaged.tiff: 2 of 24 tiles \(8.3%\) cannot be decoded"):
        convert_slide(damaged_slide, tmp_path / "fixed.tiff")
    assert list(tmp_path.iterdir()) == []


def test_waiting_tiles_spill_to_disk_not_memory(tmp_path: Path) -> None:
    with (tmp_path / "spill").open("w+b") as spill:
        store = SpillStore(spill)
        store[0, 0] = b"abc"
        store[0, 1] = (1, 2, 3)
        store[1, 0] = b"defg"
        assert spill.tell() == 7 and len(store) == 3
        assert store.pop((1, 0)) == b"defg" and store.pop((0, 1)) == (1, 2, 3) and store[0, 0] == b"abc"


def test_memory_stays_flat_in_slide_height(tmp_path: Path, stripes_fn) -> None:
    import tracemalloc

    from pathotune_cli.wsi.synthetic import write_pyramid_tiff

    peaks = []
    for height in (2048, 8192):  # 4x the pixels, same width
        source = write_pyramid_tiff(tmp_path / f"s{height}.tiff", 4096, height, stripes_fn, mpp=0.25, factor=2)
        tracemalloc.start()
        try:
            convert_slide(source, tmp_path / f"out{height}.tiff")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # a level held in memory would grow 4x

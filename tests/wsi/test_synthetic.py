"""Generated pyramids: what OpenSlide and our reader see, the pixels of every level, and flat memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.wsi import open_slide, write_pyramid_tiff
from pathotune_cli.wsi.synthetic import blobs_tile_fn


def test_generic_pyramid_reads_in_openslide_and_directly(small_pyramid: Path) -> None:
    import openslide
    import tifffile

    with tifffile.TiffFile(small_pyramid) as tif:
        assert len(tif.pages) == 4 and not tif.pages[0].subifds  # reduced levels in the main IFD chain
        assert [p.subfiletype for p in tif.pages] == [0, 1, 1, 1]
    with openslide.OpenSlide(str(small_pyramid)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_dimensions == ((4096, 3072), (2048, 1536), (1024, 768), (512, 384))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    with open_slide(small_pyramid) as reader:
        assert reader.backend == "tifffile" and reader.mpp == pytest.approx(0.25)
        assert reader.level_downsamples == (1.0, 2.0, 4.0, 8.0)


def test_every_level_holds_the_tile_function_shrunk(small_pyramid: Path, stripes_fn) -> None:
    expected = stripes_fn(0, 0, 4096, 3072)
    with open_slide(small_pyramid) as reader:
        for level in range(reader.levels):
            w, h = reader.level_dimensions[level]
            if level:  # each level halves the one above it (2 x 2 means)
                quads = expected.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3))
                expected = ((quads + 2) // 4).astype(np.uint8)
            got = reader.read_region(0, 0, level, w, h)
            assert np.abs(got.astype(np.int16) - expected).mean() < 4, level  # JPEG quality 90


def test_aperio_style_description(tmp_path: Path) -> None:
    import openslide

    path = write_pyramid_tiff(
        tmp_path / "a.svs", 1500, 1000, blobs_tile_fn(1500, 1000), mpp=0.5, aperio=True, min_level_size=200
    )
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert slide.properties["openslide.objective-power"] == "20"
        assert slide.level_count == 2
    with open_slide(path) as reader:
        assert (reader.backend, reader.mpp, reader.objective_power) == ("tifffile", 0.5, 20)


def test_writing_holds_no_level_in_memory(tmp_path: Path) -> None:
    fn = blobs_tile_fn(8192, 8192)
    tracemalloc.start()
    try:
        write_pyramid_tiff(tmp_path / "big.tiff", 8192, 8192, fn, mpp=0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8192 * 8192 * 3 / 4  # a level 0 is 201 MB; a band of tile rows is ~6 MB
    with open_slide(tmp_path / "big.tiff") as reader:
        assert reader.level_dimensions == ((8192, 8192), (2048, 2048), (512, 512))


def test_tile_function_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tile_fn\(0, 0, 256, 256\) returned \(1, 1, 3\)"):
        write_pyramid_tiff(tmp_path / "x.tiff", 512, 512, lambda x, y, w, h: np.zeros((1, 1, 3), np.uint8))

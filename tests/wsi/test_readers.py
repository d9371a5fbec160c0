"""Slide readers: the direct TIFF decoder against OpenSlide, backend choice, and every way a file can fail."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.errors import BadInput, MissingDependency
from pathotune_cli.wsi import DamagedSlide, open_slide
from pathotune_cli.wsi.reader import rgba_to_rgb

# The direct path and OpenSlide decode the same JPEG bytes with libjpeg-turbo; we allow 2 grey levels of
# decoder rounding (IDCT / colour-conversion differences between builds) and a mean below 0.05. Measured
# on this stack: identical (max difference 0).
JPEG_MAX_DIFF = 2
JPEG_MEAN_DIFF = 0.05


def _openslide_rgb(path: Path, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return rgba_to_rgb(np.asarray(slide.read_region((x0, y0), level, (w, h))))


def _close(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= JPEG_MAX_DIFF, diff.max()
    assert diff.mean() < JPEG_MEAN_DIFF, diff.mean()


def test_direct_path_matches_openslide_on_the_cmu_svs(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as reader:
        assert reader.backend == "tifffile"
        w, h = reader.dimensions
        _close(reader.read_region(0, 0, 0, w, h), _openslide_rgb(cmu_svs, 0, 0, 0, w, h))
        for x, y in [(0, 0), (239, 241), (1000, 2500), (1996, 2743)]:  # across stored 240 px tile seams
            _close(reader.read_region(x, y, 0, 224, 224), _openslide_rgb(cmu_svs, 0, x, y, 224, 224))


def test_direct_path_matches_openslide_on_every_level_of_the_pyramid(cmu_pyramid: Path) -> None:
    with open_slide(cmu_pyramid) as reader:
        assert reader.backend == "tifffile"
        assert reader.levels == 4
        for level, (w, h) in enumerate(reader.level_dimensions):
            _close(reader.read_region(0, 0, level, w, h), _openslide_rgb(cmu_pyramid, level, 0, 0, w, h))
        _close(
            reader.read_region(700, 1300, 0, 300, 300), _openslide_rgb(cmu_pyramid, 0, 700, 1300, 300, 300)
        )


def test_thumbnail_bands_decoded_in_threads_equal_one_by_one(
    cmu_svs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.wsi.tiff_reader as tiff_mod
    from pathotune_cli.hardware import usable_cpus

    with open_slide(cmu_svs) as reader:
        w, h = reader.dimensions
        threaded = reader._read_band(0, 0, 0, w, h)  # 9 x 12 stored tiles: the threaded path
        if usable_cpus() > 1:
            assert tiff_mod._decode_many(reader, 0, list(range(64))) is not None
        thumb = reader.thumbnail(1024)
        region = reader.read_region(0, 0, 0, w, h)  # regions never take it: they use (and fill) the cache
        assert len(reader._cache) > 0
    monkeypatch.setattr(tiff_mod, "_PARALLEL_TILES", 10**9)
    with open_slide(cmu_svs) as reader:
        assert np.array_equal(reader._read(0, 0, 0, w, h), threaded)
        assert np.array_equal(reader.thumbnail(1024), thumb)
        assert np.array_equal(region, threaded)


def test_levels_and_downsamples_agree_with_openslide(cmu_pyramid: Path, fixtures_dir: Path) -> None:
    import openslide

    for path in (cmu_pyramid, fixtures_dir / "boxes.tiff"):
        with open_slide(path) as reader, openslide.OpenSlide(str(path)) as slide:
            assert reader.level_dimensions == slide.level_dimensions
            assert np.allclose(reader.level_downsamples, slide.level_downsamples)


def test_backend_choice_per_format(cmu_svs: Path, fixtures_dir: Path, kidney_tif: Path) -> None:
    expected = {
        cmu_svs: "tifffile",
        fixtures_dir / "boxes.tiff": "tifffile",
        fixtures_dir / "small.svs": "tifffile",
        fixtures_dir / "boxes_0.dcm": "openslide",
        fixtures_dir / "boxes_1.dcm": "openslide",
        kidney_tif: "image",
    }
    for path, backend in expected.items():
        with open_slide(path) as reader:
            assert reader.backend == backend, path.name
            region = reader.read_region(0, 0, 0, 8, 8)
            assert region.shape == (8, 8, 3) and region.dtype == np.uint8


def test_svs_metadata_mpp_power_and_associated_images(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as reader:
        assert reader.mpp == pytest.approx(0.499)
        assert reader.mpp_source == "aperio-description"
        assert reader.objective_power == 20
        images = reader.associated_images
        assert set(images) == {"thumbnail", "label", "macro"}
        assert all(img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 for img in images.values())
    with open_slide(cmu_svs, backend="openslide") as reader:
        assert reader.mpp == pytest.approx(0.499)
        assert reader.objective_power == 20
        assert set(reader.associated_images) == {"thumbnail", "label", "macro"}


def test_flat_tiff_is_one_level_slide_without_mpp(kidney_tif: Path) -> None:
    from PIL import Image

    with open_slide(kidney_tif) as reader:
        assert reader.level_dimensions == ((1493, 901),)
        assert reader.read_region(100, 50, 0, 64, 32).shape == (32, 64, 3)
        expected = np.asarray(Image.open(kidney_tif).convert("RGB"))[50:82, 100:164]
        assert np.array_equal(reader.read_region(100, 50, 0, 64, 32), expected)


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_a_level_that_does_not_exist_is_an_error(cmu_pyramid: Path, backend: str) -> None:
    with open_slide(cmu_pyramid, backend=backend) as reader:
        with pytest.raises(BadInput, match=r"level 4 does not exist; the slide has levels 0-3"):
            reader.read_region(0, 0, 4, 16, 16)
        with pytest.raises(BadInput, match="level -1 does not exist"):
            reader.read_region(0, 0, -1, 16, 16)


def test_a_level_that_does_not_exist_is_an_error_for_flat_images(kidney_tif: Path) -> None:
    with open_slide(kidney_tif) as reader, pytest.raises(BadInput, match="level 1 does not exist"):
        reader.read_region(0, 0, 1, 16, 16)


def test_region_off_the_slide_fails_unless_padded_with_white(cmu_pyramid: Path) -> None:
    with open_slide(cmu_pyramid) as reader:
        with pytest.raises(BadInput, match="leaves the slide"):
            reader.read_region(2100, 0, 0, 224, 224)
        padded = reader.read_region(2100, 0, 0, 224, 224, pad=True)
        assert (padded[:, 120:] == 255).all()
        assert np.array_equal(padded[:, :120], reader.read_region(2100, 0, 0, 120, 224))


def test_thumbnail_is_the_coarsest_large_enough_level_shrunk(
    cmu_pyramid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    import pathotune_cli.wsi.reader as reader_mod

    with open_slide(cmu_pyramid) as reader:
        whole = reader.thumbnail(512)
        assert whole.shape == (512, 383, 3)
        level2 = Image.fromarray(reader.read_region(0, 0, 2, *reader.level_dimensions[2]))  # 555 x 741
        expected = np.asarray(level2.resize((383, 512), Image.Resampling.BOX))
        assert np.abs(whole.astype(int) - expected).max() <= 1
        monkeypatch.setattr(reader_mod, "_THUMB_CHUNK_BYTES", 555 * 3 * 50)  # read in bands of 50 rows
        banded = reader.thumbnail(512)
        assert np.abs(banded.astype(int) - whole).mean() < 0.5


def test_truncated_svs_is_one_clear_line(truncated_svs: Path) -> None:
    with pytest.raises(DamagedSlide, match=r"truncated.svs: the file is truncated") as info:
        open_slide(truncated_svs)
    assert "\n" not in info.value.one_line()
    assert "copy it again" in info.value.one_line()


def test_text_file_renamed_svs_is_one_clear_line(text_svs: Path) -> None:
    with pytest.raises(
        BadInput, match=r"notes.svs: not a slide or image pathotune can read \(it holds text"
    ) as info:
        open_slide(text_svs)
    assert "\n" not in info.value.one_line()


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        open_slide(tmp_path / "absent.svs")
    with pytest.raises(BadInput, match="a folder, not a slide file"):
        open_slide(tmp_path)
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(DamagedSlide, match="the file is empty"):
        open_slide(tmp_path / "empty.svs")


def test_missing_openslide_names_the_pip_install(fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openslide", None)  # "import openslide" now raises ImportError
    with pytest.raises(MissingDependency, match="OpenSlide") as info:
        open_slide(fixtures_dir / "boxes_0.dcm")
    assert "pip install openslide-python openslide-bin" in info.value.one_line()


def test_missing_imagecodecs_names_the_pip_install_when_openslide_cannot_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathotune_cli.wsi.synthetic import blobs_tile_fn, write_pyramid_tiff

    path = write_pyramid_tiff(tmp_path / "p.tiff", 512, 512, blobs_tile_fn(512, 512), min_level_size=256)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with open_slide(path) as reader:  # OpenSlide reads it instead
        assert reader.backend == "openslide"
    monkeypatch.setitem(sys.modules, "openslide", None)
    with pytest.raises(MissingDependency, match="needs imagecodecs") as info:
        open_slide(path)
    assert info.value.fix == "pip install imagecodecs"


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)
    rgba[1, 1] = (0, 0, 0, 128)
    rgb = rgba_to_rgb(rgba)
    assert tuple(rgb[0, 0]) == (200, 100, 50)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert tuple(rgb[1, 1]) == (127, 127, 127)

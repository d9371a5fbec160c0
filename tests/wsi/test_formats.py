"""CZI, OME-TIFF and OME-Zarr slides written by each format's own library from real H&E open through ``open_slide``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi import open_slide, plan_slide
from pathotune_cli.wsi.support import UnsupportedFormat, format_of, readable_formats

# (backend chosen by content, levels, mpp source); levels: pylibCZIrw writes no pyramid, the others 3 levels.
EXPECTED = {
    "czi": ("czi", 1, "czi-scaling"),
    "ome-tiff": ("tifffile", 3, "ome-xml"),
    "ome-zarr": ("zarr", 3, "ngff-scale"),
}
# OME-TIFF stores JPEG (quality 95, YCbCr 4:2:0): 3.5 grey levels on average here; CZI (zstd) and Zarr are lossless.
MEAN_DIFF = {"czi": 0.0, "ome-tiff": 5.0, "ome-zarr": 0.0}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_format_opens_by_content_with_its_size_levels_and_mpp(
    kind: str, format_slides: dict[str, Path], cmu_region: np.ndarray
) -> None:
    backend, levels, source = EXPECTED[kind]
    with open_slide(format_slides[kind]) as reader:
        assert reader.backend == backend
        assert reader.dimensions == (1024, 1536)
        assert reader.levels == levels
        assert reader.mpp == pytest.approx(0.499)
        assert reader.mpp_source == source
        region = reader.read_region(100, 200, 0, 300, 300)
        diff = np.abs(region.astype(np.int16) - cmu_region[200:500, 100:400])
        assert diff.mean() <= MEAN_DIFF[kind]
        if levels > 1:
            assert reader.level_dimensions[1] == (512, 768)
            half = reader.read_region(0, 0, 1, 512, 768)
            assert np.abs(half.astype(np.int16) - cmu_region[::2, ::2]).mean() < 12  # resampled, not the same pixels


def test_czi_chosen_by_its_header_not_its_name(format_slides: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "scan.bin"
    renamed.write_bytes(format_slides["czi"].read_bytes())
    with open_slide(renamed) as reader:
        assert reader.backend == "czi"


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_plan_cuts_tiles_where_the_tissue_is(kind: str, format_slides: dict[str, Path]) -> None:
    plan = plan_slide(format_slides[kind], target_mpp=0.5, tile_size=224)
    assert plan.mpp == pytest.approx(0.499) and plan.mpp_source == "metadata"
    assert 0 < len(plan.coords) < plan.candidates  # the region holds tissue and background
    assert plan.tissue_fraction.min() >= 0.25


def test_a_zarr_folder_without_ome_metadata_says_so(tmp_path: Path) -> None:
    import zarr

    folder = tmp_path / "plain.zarr"
    zarr.open_group(str(folder), mode="w").create_array("x", shape=(4, 4), dtype="uint8")
    with pytest.raises(BadInput, match="plain.zarr: a zarr folder without OME multiscales metadata"):
        open_slide(folder)


def test_a_format_no_reader_handles_names_the_conversion(tmp_path: Path) -> None:
    vsi = tmp_path / "biopsy.vsi"
    vsi.write_bytes(b"II*\x00" + b"\x00" * 64)  # a VSI is a TIFF container: the name decides here
    with pytest.raises(UnsupportedFormat, match=r"biopsy.vsi: Olympus/Evident VSI is a slide format") as err:
        open_slide(vsi)
    assert "bfconvert" in err.value.fix and "biopsy.ome.tif" in err.value.fix and "QuPath" in err.value.fix
    assert err.value.exit_code == 2


def test_unknown_binary_data_gets_the_conversion_too(tmp_path: Path) -> None:
    blob = tmp_path / "scan.xyz"
    blob.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UnsupportedFormat, match=r"scan.xyz: not a slide or image pathotune can read \(unrecognised"):
        open_slide(blob)


def test_readable_formats_say_what_reads_each_and_how_to_add_the_rest() -> None:
    rows = {row["format"]: row for row in readable_formats()}
    assert rows["Zeiss CZI"]["reads"] and rows["Zeiss CZI"]["reader"] == "czi"
    assert rows["OME-Zarr"]["reads"] and rows["OME-TIFF"]["reads"]
    assert not rows["Olympus/Evident VSI"]["reads"] and "bfconvert" in str(rows["Olympus/Evident VSI"]["add"])
    assert format_of(Path("a.ome.tif")).name == "OME-TIFF"  # the longest suffix wins over .tif


def test_czi_levels_come_from_its_pyramid_zooms() -> None:
    from pathotune_cli.wsi.czi_reader import _level_dimensions

    # edge subblocks carry zooms a little off their layer's; one level per whole downsample
    dims = _level_dimensions((10_000, 6_000), [1.0, 0.5, 0.499, 0.25, 0.1111])
    assert dims == ((10_000, 6_000), (5_000, 3_000), (2_500, 1_500), (1_111, 666))


def test_czi_scenes_compose_on_white_from_the_mosaic_origin(cmu_region: np.ndarray, tmp_path: Path) -> None:
    from pylibCZIrw import czi as pyczi

    piece = np.ascontiguousarray(cmu_region[:512, :512])
    path = tmp_path / "scenes.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:  # two scenes, the first left of the origin
        for scene, x in enumerate((-300, 1000)):
            czi.write(data=np.ascontiguousarray(piece[..., ::-1]), location=(x, 200), plane={"C": 0, "T": 0, "Z": 0},
                      scene=scene)
        czi.write_metadata(scale_x=0.25e-6, scale_y=0.25e-6)
    with open_slide(path) as reader:
        assert reader.dimensions == (1812, 512) and reader.mpp == pytest.approx(0.25)
        assert np.array_equal(reader.read_region(0, 0, 0, 512, 512), piece)
        assert np.array_equal(reader.read_region(1300, 0, 0, 512, 512), piece)
        assert (reader.read_region(700, 100, 0, 100, 100) == 255).all()  # between the scenes


def test_ome_zarr_of_ngff_0_4_in_zarr_v2_opens_too(cmu_region: np.ndarray, tmp_path: Path) -> None:
    import warnings

    import zarr

    piece = np.ascontiguousarray(cmu_region[:768, :512])
    root = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_image

        write_image(image=np.moveaxis(piece, -1, 0), group=root, axes="cyx", scale_factors=(2,), fmt=FormatV04(),
                    scale={"y": 0.25, "x": 0.25}, axes_units={"y": "micrometer", "x": "micrometer"},
                    storage_options={"chunks": (3, 256, 256)})
    assert (tmp_path / "v04.zarr" / ".zattrs").is_file()
    with open_slide(tmp_path / "v04.zarr") as reader:
        assert reader.level_dimensions == ((512, 768), (256, 384)) and reader.mpp == pytest.approx(0.25)
        assert np.array_equal(reader.read_region(0, 0, 0, 512, 768), piece)

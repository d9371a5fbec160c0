"""Tile grids at a physical resolution, checked against grids computed by hand, and the CMU slide's plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi import open_slide, plan_slide, read_batch
from pathotune_cli.wsi.grid import choose_level, grid_coords, make_grid, target_downsample, tissue_fractions
from pathotune_cli.wsi.tissue import saturation_of


def test_cmu_grid_by_hand() -> None:
    # 0.5 µm/px from a 0.499 µm/px level 0: footprint 224 * 0.5 / 0.499 = 224.45 -> 224 px, read at level 0.
    # Columns: x = 0, 224, ..., 1792 (1792 + 224 = 2016 <= 2220; 2016 + 224 > 2220) -> 9.
    # Rows:    y = 0, 224, ..., 2688 (2688 + 224 = 2912 <= 2967; 2912 + 224 > 2967) -> 13.
    grid = make_grid([1.0], target_downsample(0.499, target_mpp=0.5), 224)
    assert (grid.level, grid.read_size, grid.patch_size_level0, grid.stride_level0) == (0, 224, 224, 224)
    coords = grid_coords((2220, 2967), grid.patch_size_level0, grid.stride_level0)
    expected = [(x, y) for y in range(0, 2689, 224) for x in range(0, 1793, 224)]
    assert coords.dtype == np.int64 and coords.shape == (117, 2)
    assert [tuple(c) for c in coords.tolist()] == expected


def test_level_choice_on_a_40x_pyramid_by_hand() -> None:
    downsamples = [1.0, 4.0, 16.0]  # a 0.2527 µm/px scan with 4x levels: 0.2527, 1.0108, 4.0432 µm/px
    mpp0 = 0.2527
    # 0.5 µm/px: level 1 (1.0108) is coarser, so level 0; read 224 * 0.5 / 0.2527 = 443.2 -> 443.
    grid = make_grid(downsamples, target_downsample(mpp0, target_mpp=0.5), 224)
    assert (grid.level, grid.read_size, grid.patch_size_level0) == (0, 443, 443)
    # 1.0 µm/px: level 1 is 1.08 % coarser, within the 2 % rounding tolerance; read 224 / 1.0108 -> 222.
    grid = make_grid(downsamples, target_downsample(mpp0, target_mpp=1.0), 224)
    assert (grid.level, grid.read_size, grid.patch_size_level0) == (1, 222, 886)
    # 2.0 µm/px: level 1 again (level 2 is coarser); read 224 * 2 / 1.0108 = 443.2 -> 443.
    grid = make_grid(downsamples, target_downsample(mpp0, target_mpp=2.0), 224)
    assert (grid.level, grid.read_size, grid.patch_size_level0) == (1, 443, 1773)
    assert choose_level(downsamples, 0.99) == 0
    assert choose_level(downsamples, 64.0) == 2


def test_overlap_and_magnification() -> None:
    grid = make_grid([1.0, 2.0], target_downsample(0.25, mag=20, objective_power=40), 224, overlap=32)
    assert (grid.level, grid.read_size, grid.patch_size_level0, grid.stride_level0) == (1, 224, 448, 384)
    coords = grid_coords((1000, 500), grid.patch_size_level0, grid.stride_level0)
    assert coords.tolist() == [[0, 0], [384, 0]]
    # Without an objective power, 20x reads as 0.5 µm/px.
    assert target_downsample(0.25, mag=20) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="overlap"):
        make_grid([1.0], 1.0, 224, overlap=224)


def test_tissue_fraction_from_a_mask() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # left half of a 1000 x 1000 slide
    coords = np.array([[0, 0], [400, 0], [500, 500], [250, 250]])
    fractions = tissue_fractions(coords, 200, mask, (1000, 1000))
    assert fractions.tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])


def test_cmu_tiles_only_where_there_is_tissue(cmu_svs: Path) -> None:
    plan = plan_slide(cmu_svs, target_mpp=0.5, tile_size=224, min_tissue=0.25)
    every = plan_slide(cmu_svs, target_mpp=0.5, tile_size=224, tissue="none")
    assert every.candidates == plan.candidates == 117 and len(every.coords) == 117
    assert 30 < len(plan.coords) < 100
    assert (plan.tissue_fraction >= 0.25).all()
    kept = {tuple(c) for c in plan.coords.tolist()}
    with open_slide(cmu_svs) as reader:
        tiles = read_batch(reader, every.coords, 0, 224, 224)
    # Independent of the thumbnail: the share of each tile's own full-resolution pixels that are stained.
    stained = np.array([(saturation_of(t) > 40).mean() for t in tiles])
    in_plan = np.array([tuple(c) in kept for c in every.coords.tolist()])
    assert stained[in_plan].min() > 0.15
    assert stained[~in_plan].max() < 0.3
    assert in_plan[stained > 0.4].all() and not in_plan[stained < 0.05].any()


def test_svs_and_pyramid_tiff_of_the_same_region_give_the_same_tiles(
    cmu_svs: Path, cmu_pyramid: Path
) -> None:
    a = plan_slide(cmu_svs, target_mpp=0.5, tile_size=224)
    b = plan_slide(cmu_pyramid, target_mpp=0.5, tile_size=224)
    assert (a.level, a.read_size, a.grid.patch_size_level0) == (
        b.level,
        b.read_size,
        b.grid.patch_size_level0,
    )
    assert np.array_equal(a.coords, b.coords)
    with open_slide(cmu_svs) as ra, open_slide(cmu_pyramid) as rb:
        ta = read_batch(ra, a.coords[:16], a.level, a.read_size, 224)
        tb = read_batch(rb, b.coords[:16], b.level, b.read_size, 224)
    assert np.abs(ta.astype(int) - tb).mean() < 5  # re-encoded JPEG, same pixels otherwise


def test_coarser_levels_are_used_for_coarser_targets(cmu_pyramid: Path) -> None:
    plan = plan_slide(cmu_pyramid, target_mpp=2.0, tile_size=112, tissue="none")
    # Level 2 is 0.499 * 4.002 = 1.997 µm/px, as fine as 2.0; read 112 * 2.0 / 1.997 = 112.2 -> 112.
    assert (plan.level, plan.read_size, plan.grid.patch_size_level0) == (2, 112, 449)


def test_a_target_finer_than_the_scan_is_refused(cmu_svs: Path) -> None:
    with pytest.raises(BadInput, match=r"scanned at 0.499 µm/px, coarser than the target 0.25"):
        plan_slide(cmu_svs, target_mpp=0.25)


def test_tissue_from_qupath_polygons(cmu_svs: Path, tmp_path: Path) -> None:
    import json

    square = [[[0, 0], [1000, 0], [1000, 1000], [0, 1000], [0, 0]]]
    (tmp_path / "t.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": square},
                        "properties": {},
                    }
                ],
            }
        )
    )
    plan = plan_slide(cmu_svs, target_mpp=0.5, tissue_geojson=tmp_path / "t.geojson", min_tissue=0.5)
    assert plan.tissue_mode == "geojson"
    # Tiles at 0-672 lie inside the square; the one at 896 is only 104 / 224 = 46 % inside.
    expected = [[x, y] for y in (0, 224, 448, 672) for x in (0, 224, 448, 672)]
    assert plan.coords.tolist() == expected

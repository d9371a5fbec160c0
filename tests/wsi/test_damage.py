"""Tiles that do not decode: filled from a coarser level or left out, counted, and past a share the slide fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.wsi import iter_tile_batches, open_slide, plan_slide
from pathotune_cli.wsi.damage import DEFAULT_MAX_DAMAGED, TileDamage, read_tile_tolerant, write_damage_geojson
from pathotune_cli.wsi.reader import DamagedSlide, DamagedTile
from pathotune_cli.wsi.tiles import for_each_tile, read_batch

# Stored tiles 5 and 6 (4 across, 256 px) cover level-0 x 256-768, y 256-512; a 224 px grid meets them in 6 tiles.
DAMAGED_GRID = {(224, 224), (448, 224), (672, 224), (224, 448), (448, 448), (672, 448)}


def _grid() -> np.ndarray:
    return np.array([(x, y) for y in range(0, 1536 - 223, 224) for x in range(0, 1024 - 223, 224)], np.int64)


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_an_undecodable_tile_fails_a_strict_read_with_its_reason(damaged_slide: Path, backend: str) -> None:
    with open_slide(damaged_slide, backend) as reader, pytest.raises(DamagedTile, match="Corrupt JPEG data"):
        reader.read_region(256, 256, 0, 224, 224)


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_damaged_tiles_are_filled_from_the_next_level_and_counted(
    damaged_slide: Path, cmu_region: np.ndarray, backend: str
) -> None:
    coords = _grid()
    damage = TileDamage("damaged.tiff", total=len(coords), max_share=0.5)
    batches = list(iter_tile_batches(damaged_slide, coords, level=0, read_size=224, tile_size=224, batch_size=8,
                                     backend=backend, damage=damage))
    assert set(damage.filled) == DAMAGED_GRID and damage.left_out == [] and damage.count == 6
    assert "Corrupt JPEG data" in damage.first_error
    filled = np.concatenate([b.filled for b in batches])
    assert {tuple(c) for c in coords[filled]} == DAMAGED_GRID
    assert all(b.kept.all() for b in batches)
    tiles = np.concatenate([b.tiles for b in batches])
    index = int(np.flatnonzero((coords == (448, 448)).all(1))[0])
    source = cmu_region[448:672, 448:672].astype(np.int16)
    assert np.abs(tiles[index].astype(np.int16) - source).mean() < 15  # level 1 resampled: blurred, same tissue
    healthy = int(np.flatnonzero((coords == (0, 0)).all(1))[0])
    assert np.abs(tiles[healthy].astype(np.int16) - cmu_region[:224, :224]).mean() < 5


def test_worker_processes_report_the_same_damage(damaged_slide: Path) -> None:
    coords = _grid()
    damage = TileDamage("damaged.tiff", total=len(coords), max_share=0.5)
    batches = list(iter_tile_batches(damaged_slide, coords, level=0, read_size=224, tile_size=224, batch_size=8,
                                     workers=2, damage=damage))
    assert set(damage.filled) == DAMAGED_GRID
    assert sum(int(b.filled.sum()) for b in batches) == 6


def test_a_tile_no_level_decodes_is_left_out(damaged_slide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_slide(damaged_slide) as reader:
        monkeypatch.setattr(type(reader), "levels", property(lambda self: 1))  # no coarser level to fall back on
        damage = TileDamage("damaged.tiff", total=10, max_share=None)
        tile, kept = read_tile_tolerant(reader, 448, 448, 0, 224, 224, damage)
        assert not kept and (tile == 255).all() and damage.left_out == [(448, 448)]
        out = read_batch(reader, np.array([[0, 0], [448, 448]]), 0, 224, 224, damage)
        assert damage.left_out == [(448, 448), (448, 448)] and out[0].mean() < 250


def test_for_each_tile_skips_left_out_tiles_and_fills_the_rest(damaged_slide: Path) -> None:
    seen: list[tuple[int, int]] = []
    damage = TileDamage("damaged.tiff", total=24, max_share=0.5)
    for_each_tile(damaged_slide, _grid(), lambda tile, x, y: seen.append((x, y)), level=0, read_size=224,
                  tile_size=224, threads=2, damage=damage)
    assert len(seen) == 24 and set(damage.filled) == DAMAGED_GRID


def test_damage_above_the_share_fails_the_slide_with_its_reason(damaged_slide: Path) -> None:
    coords = _grid()
    damage = TileDamage("damaged.tiff", total=len(coords))  # our default: 5%; 6 of 24 is 25%
    assert damage.max_share == DEFAULT_MAX_DAMAGED
    with pytest.raises(DamagedSlide, match=r"damaged.tiff: \d+ of 24 tiles \(\d+\.\d%\) cannot be decoded, above the "
                       r"limit of 5% \(Corrupt JPEG data") as err:
        list(iter_tile_batches(damaged_slide, coords, level=0, read_size=224, tile_size=224, damage=damage))
    assert err.value.exit_code == 2 and "raise --max-damaged" in err.value.fix


def test_without_a_counter_the_first_damaged_tile_fails_as_before(damaged_slide: Path) -> None:
    with pytest.raises(DamagedTile, match="damaged.tiff: tile 5 of level 0 cannot be decoded"):
        list(iter_tile_batches(damaged_slide, _grid(), level=0, read_size=224, tile_size=224))


def test_plan_and_thumbnail_read_past_damaged_tiles(damaged_slide: Path) -> None:
    plan = plan_slide(damaged_slide, target_mpp=0.5, tile_size=224)  # the 2048 px thumbnail wants level 0
    assert len(plan.coords) > 0
    with open_slide(damaged_slide) as reader, pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(reader), "levels", property(lambda self: 1))
        thumb = reader.thumbnail(512)  # one level only: the damaged blocks are white
        assert thumb.shape[:2] == (512, 341) and thumb.mean() < 250


def test_damaged_tiles_are_marked_in_a_qupath_geojson(tmp_path: Path) -> None:
    import json

    damage = TileDamage(filled=[(224, 224)], left_out=[(448, 448)])
    data = json.loads(write_damage_geojson(tmp_path / "damaged.geojson", damage, 224).read_text())
    names = [f["properties"]["classification"]["name"] for f in data["features"]]
    assert names == ["Damaged (filled from a coarser level)", "Damaged (left out)"]
    assert data["features"][1]["geometry"]["coordinates"][0][2] == [672, 672]


def test_a_jpeg_is_complete_only_when_its_scan_ends_at_the_end() -> None:
    import imagecodecs

    from pathotune_cli.wsi.damage import jpeg_complete

    rng = np.random.default_rng(0)
    good = imagecodecs.jpeg_encode(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), level=90)
    assert jpeg_complete(good) and jpeg_complete(good + b"\x00\x00")  # a writer's alignment padding
    cut = len(good) * 2 // 3
    assert not jpeg_complete(good[:cut])  # truncated: no end-of-image marker
    assert not jpeg_complete(good[:cut] + b"\xff\xd9" + bytes(len(good) - cut - 2))  # ended early, then zeros
    assert not jpeg_complete(b"\x00" * 100)

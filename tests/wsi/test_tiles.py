"""Streaming tiles: order, workers, resizing, errors from workers, memory flat in slide size; tiles in threads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi import for_each_tile, iter_tile_batches, open_slide, plan_slide, read_tile, write_pyramid_tiff
from pathotune_cli.wsi.synthetic import blobs_tile_fn


def _collect(batches) -> tuple[np.ndarray, np.ndarray, list[int]]:
    tiles, coords, starts = [], [], []
    for batch in batches:
        tiles.append(batch.tiles)
        coords.append(batch.coords)
        starts.append(batch.start)
    return np.concatenate(tiles), np.concatenate(coords), starts


def test_batches_come_in_order_and_match_single_reads(cmu_svs: Path) -> None:
    plan = plan_slide(cmu_svs, target_mpp=0.5)
    tiles, coords, starts = _collect(
        iter_tile_batches(cmu_svs, plan.coords, level=0, read_size=224, tile_size=224, batch_size=16)
    )
    assert np.array_equal(coords, plan.coords)
    assert starts == list(range(0, len(plan.coords), 16))
    assert tiles.shape == (len(plan.coords), 224, 224, 3) and tiles.dtype == np.uint8
    with open_slide(cmu_svs) as reader:
        x, y = plan.coords[7]
        assert np.array_equal(tiles[7], reader.read_region(int(x), int(y), 0, 224, 224))


def test_worker_processes_give_the_same_tiles(cmu_pyramid: Path) -> None:
    plan = plan_slide(cmu_pyramid, target_mpp=1.0, tile_size=96)
    kwargs = dict(level=plan.level, read_size=plan.read_size, tile_size=96, batch_size=8)
    local, coords, _ = _collect(iter_tile_batches(cmu_pyramid, plan.coords, **kwargs))
    pooled, pooled_coords, _ = _collect(
        iter_tile_batches(cmu_pyramid, plan.coords, workers=2, prefetch=2, **kwargs)
    )
    assert np.array_equal(coords, pooled_coords)
    assert np.array_equal(local, pooled)


def test_an_error_in_a_worker_reaches_the_caller_with_its_fix(cmu_pyramid: Path) -> None:
    batches = iter_tile_batches(cmu_pyramid, np.array([[0, 0]]), level=7, read_size=8, tile_size=8, workers=1)
    with pytest.raises(BadInput, match="level 7 does not exist"):
        next(batches)
    with pytest.raises(BadInput, match="no such file"):
        next(
            iter_tile_batches("absent.svs", np.array([[0, 0]]), level=0, read_size=8, tile_size=8, workers=1)
        )


@pytest.mark.parametrize("threads", [1, 3])
def test_each_tile_reaches_the_function_once_from_threads(cmu_pyramid: Path, threads: int) -> None:
    import threading

    plan = plan_slide(cmu_pyramid, target_mpp=1.0, tile_size=96)
    seen: dict[tuple[int, int], np.ndarray] = {}
    names: set[str] = set()

    def keep(tile: np.ndarray, x: int, y: int) -> None:
        assert (x, y) not in seen
        seen[(x, y)] = tile.copy()
        names.add(threading.current_thread().name)

    for_each_tile(cmu_pyramid, plan.coords, keep, level=plan.level, read_size=plan.read_size, tile_size=96,
                  threads=threads)
    assert sorted(seen) == sorted(map(tuple, plan.coords.tolist()))
    assert len(names) == min(threads, len(plan.coords))
    with open_slide(cmu_pyramid) as reader:
        for x, y in plan.coords[:: max(1, len(plan.coords) // 7)].tolist():
            assert np.array_equal(seen[(x, y)], read_tile(reader, x, y, plan.level, plan.read_size, 96))


def test_errors_in_tile_threads_reach_the_caller(cmu_pyramid: Path, kidney_tif: Path) -> None:
    coords = np.array([[0, 0], [0, 8], [8, 0], [8, 8]])
    with pytest.raises(BadInput, match="level 7 does not exist"):
        for_each_tile(cmu_pyramid, coords, lambda *a: None, level=7, read_size=8, tile_size=8, threads=2)
    calls = []

    def fail_on_third(tile: np.ndarray, x: int, y: int) -> None:
        calls.append((x, y))
        if len(calls) == 3:
            raise OSError("No space left on device")

    many = np.array([[x, y] for y in range(0, 400, 8) for x in range(0, 400, 8)])
    with pytest.raises(OSError, match="No space left"):
        for_each_tile(kidney_tif, many, fail_on_third, level=0, read_size=8, tile_size=8, threads=2)
    assert len(calls) < len(many)  # the other thread stopped too


def test_read_size_is_resized_to_tile_size(cmu_pyramid: Path) -> None:
    with open_slide(cmu_pyramid) as reader:
        tile = read_tile(reader, 448, 448, 1, 112, 56)
        region = reader.read_region(448, 448, 1, 112, 112)
    assert tile.shape == (56, 56, 3)
    assert abs(float(tile.mean()) - float(region.mean())) < 2


def _stream_peak(path: Path) -> tuple[int, int]:
    plan = plan_slide(path, target_mpp=0.5, tissue="none")
    tracemalloc.start()
    try:
        count = 0
        for batch in iter_tile_batches(
            path, plan.coords, level=plan.level, read_size=plan.read_size, tile_size=224, batch_size=32
        ):
            count += len(batch.tiles)
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


def test_streaming_memory_is_flat_in_slide_size(tmp_path: Path) -> None:
    small = write_pyramid_tiff(tmp_path / "small.tiff", 4096, 4096, blobs_tile_fn(4096, 4096), mpp=0.5)
    large = write_pyramid_tiff(tmp_path / "large.tiff", 8192, 8192, blobs_tile_fn(8192, 8192), mpp=0.5)
    peak_small, n_small = _stream_peak(small)
    peak_large, n_large = _stream_peak(large)
    assert n_large == 36 * 36 and n_small == 18 * 18  # every tile of the grid, 4x more on the large slide
    level0_bytes = 8192 * 8192 * 3  # 201 MB
    assert peak_large < level0_bytes / 3
    assert peak_large < peak_small * 1.5 + 8e6  # a bounded tile cache and one batch, whatever the size


def test_a_row_by_row_grid_decodes_each_stored_tile_once_and_keeps_two_rows(tmp_path: Path) -> None:
    from pathotune_cli.wsi.tiff_reader import TiffSlideReader

    path = write_pyramid_tiff(tmp_path / "wide.tiff", 4096, 1024, blobs_tile_fn(4096, 1024), mpp=0.5, tile=256)
    coords = np.array([[x, y] for y in range(0, 1024 - 223, 224) for x in range(0, 2048 - 223, 224)])  # left half
    with TiffSlideReader(path) as reader:
        decoded: list[int] = []
        inner = reader._decode
        reader._decode = lambda level, index: decoded.append(index) or inner(level, index)  # type: ignore[method-assign]
        most = 0
        for x, y in coords.tolist():
            read_tile(reader, x, y, 0, 224, 224)
            most = max(most, len(reader._cache))
    assert sorted(decoded) == sorted(set(decoded))  # none twice
    assert len(decoded) == 8 * 4  # the 2,016 x 896 px the grid covers: 8 x 4 stored tiles
    assert most <= 2 * 8  # two stored rows of the part read, not of the slide (16 tiles across)


def test_an_interrupt_wins_and_no_tile_thread_outlives_the_call(kidney_tif: Path) -> None:
    import threading

    calls = {"main": 0, "other": 0}
    main_interrupts = threading.Event()
    waited = []

    def step(tile: np.ndarray, x: int, y: int) -> None:
        if threading.current_thread() is threading.main_thread():
            calls["main"] += 1
            if calls["main"] == 3:
                main_interrupts.set()
                raise KeyboardInterrupt
        else:
            calls["other"] += 1
            if calls["other"] == 2:  # fails too, at the same moment: Ctrl-C must still win
                waited.append(main_interrupts.wait(timeout=60))  # a condition, not a guess at timing
                raise OSError("No space left on device")

    many = np.array([[x, y] for y in range(0, 400, 8) for x in range(0, 400, 8)])
    with pytest.raises(KeyboardInterrupt):
        for_each_tile(kidney_tif, many, step, level=0, read_size=8, tile_size=8, threads=2)
    assert waited == [True]
    assert not [t for t in threading.enumerate() if t.name.startswith("tiles-")]  # joined: nothing runs on
    assert calls["other"] == 2 and calls["main"] == 3


def test_a_cancel_event_stops_every_thread_quietly(kidney_tif: Path) -> None:
    import threading

    cancel = threading.Event()
    calls = []

    def count(tile: np.ndarray, x: int, y: int) -> None:
        calls.append((x, y))
        if len(calls) == 5:
            cancel.set()

    many = np.array([[x, y] for y in range(0, 400, 8) for x in range(0, 400, 8)])
    for_each_tile(kidney_tif, many, count, level=0, read_size=8, tile_size=8, threads=2, cancel=cancel)
    assert 5 <= len(calls) < 20

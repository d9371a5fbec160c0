"""The fast slide path, as ``tile`` and ``predict`` run it, returns OpenSlide's pixels.

``tests/wsi/test_readers.py`` already holds the direct TIFF reader to OpenSlide region by region on real slides
(every level of a pyramid). This test covers what sits on top and makes it fast: the planned grid, batching,
worker processes and their read-ahead, and the order the batches come back in, on a generated pyramid with
tissue in every tile, against the CLAM/TRIDENT-style loop of ``read_region(...).convert("RGB")``.
Both decode the same JPEG bytes with libjpeg-turbo, so the allowance is 2 grey levels of decoder rounding
(observed on this stack: identical, max difference 0). ``tile --save-tiles`` spreads its slide over threads:
the files it writes are the same bytes as with one thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ALLOWED = 2  # grey levels


def _tissue(x: int, y: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[y : y + h, x : x + w]
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = 170 + (np.sin(xx / 9.0) * 40).astype(np.int16)
    out[..., 1] = 90 + ((xx // 7 + yy // 5) % 9 * 10).astype(np.int16)
    out[..., 2] = 160 + (np.cos(yy / 11.0) * 40).astype(np.int16)
    return out


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pathotune_cli.wsi import write_pyramid_tiff

    path = tmp_path_factory.mktemp("fast") / "tissue.tiff"
    return write_pyramid_tiff(path, 2400, 1800, _tissue, mpp=0.25, factor=2, min_level_size=300)


def _openslide_loop(path: Path, coords: np.ndarray, level: int, size: int) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return np.stack(
            [
                np.asarray(slide.read_region((int(x), int(y)), level, (size, size)).convert("RGB"))
                for x, y in coords
            ]
        )


@pytest.mark.parametrize(("mpp", "workers"), [(0.25, 2), (0.5, 2), (1.0, 0)])
def test_batched_worker_reads_equal_openslide(pyramid: Path, mpp: float, workers: int) -> None:
    from pathotune_cli.wsi import iter_tile_batches, plan_slide

    plan = plan_slide(pyramid, target_mpp=mpp, tile_size=224, tissue="none")
    assert plan.backend == "tifffile"  # the fast path, not OpenSlide under another name
    assert plan.read_size == plan.tile_size  # a level at the target mpp exists: no resize on either side
    got, starts = [], []
    for batch in iter_tile_batches(
        pyramid,
        plan.coords,
        level=plan.level,
        read_size=plan.read_size,
        tile_size=plan.tile_size,
        batch_size=5,
        workers=workers,
        prefetch=2,
    ):
        got.append(batch.tiles)
        starts.append(batch.start)
        assert np.array_equal(batch.coords, plan.coords[batch.start : batch.start + len(batch.tiles)])
    assert starts == list(range(0, len(plan.coords), 5))  # in order, none lost
    ours = np.concatenate(got)
    theirs = _openslide_loop(pyramid, plan.coords, plan.level, plan.read_size)
    assert ours.shape == theirs.shape
    assert int(np.abs(ours.astype(np.int16) - theirs).max()) <= ALLOWED


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_tiles_saved_from_threads_are_the_bytes_one_thread_writes(pyramid: Path, tmp_path: Path, fmt: str) -> None:
    from pathotune_cli.runs.tile import TileConfig, tile_run

    written = {}
    for threads in (1, 3):
        out = tmp_path / f"t{threads}"
        config = TileConfig(slides=(pyramid,), out=out, target_mpp=0.5, tile_size=96, save_tiles=fmt,
                            tissue="none", save_threads=threads)
        assert tile_run(config).ok
        written[threads] = {p.name: p.read_bytes() for p in (out / "tissue_tiles").iterdir()}
    assert len(written[1]) == 12 * 9  # 1,200 x 900 px at 0.5 µm/px, 96 px tiles
    assert written[1] == written[3]


def test_short_writes_still_save_whole_tiles(pyramid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pathotune_cli.runs.tile import TileConfig, tile_run

    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))  # as a full pipe or disk
    config = TileConfig(slides=(pyramid,), out=tmp_path / "t", target_mpp=1.0, tile_size=96, save_tiles="jpg",
                        tissue="none", save_threads=2)
    assert tile_run(config).ok
    monkeypatch.undo()
    from PIL import Image

    files = sorted((tmp_path / "t" / "tissue_tiles").iterdir())
    assert files and all(p.stat().st_size > 1000 for p in files)
    for path in files[:5]:
        with Image.open(path) as img:
            img.load()  # a truncated JPEG fails here


def test_a_failure_beside_the_tile_threads_leaves_nothing(pyramid: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import pathotune_cli.wsi.geojson as geojson
    from pathotune_cli.runs.tile import TileConfig, tile_run

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(geojson, "write_tissue_geojson", full_disk)
    out = tmp_path / "t"
    config = TileConfig(slides=(pyramid,), out=out, target_mpp=0.25, tile_size=96, save_tiles="jpg", save_threads=2)
    row = tile_run(config).rows[0]
    assert row.status == "failed" and "no space left on the device holding" in row.error
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "run.json", "tissue.tile.json"]  # no tiles

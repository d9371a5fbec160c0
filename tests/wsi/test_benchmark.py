"""Benchmarks, run with PATHOTUNE_BENCHMARK=1: a 50,000 px slide end to end, and tiles/s per reader.

Too slow for every CI run (writing the 50k slide takes about a minute on 2 cores), so skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("PATHOTUNE_BENCHMARK", "") != "1", reason="benchmark: set PATHOTUNE_BENCHMARK=1"
)

_LARGE = """
import json, resource, sys, time
from pathotune_cli.wsi import blobs_tile_fn, iter_tile_batches, plan_slide, write_pyramid_tiff
path, side = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
write_pyramid_tiff(path, side, side, blobs_tile_fn(side, side), mpp=0.5)
write_s, write_rss = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
plan = plan_slide(path, target_mpp=0.5, tile_size=224)
plan_s = time.perf_counter() - t
t = time.perf_counter()
n = sum(len(b.tiles) for b in iter_tile_batches(path, plan.coords, level=plan.level, read_size=plan.read_size,
                                                 tile_size=224, batch_size=64, workers=2))
print(json.dumps(dict(write_s=write_s, write_rss_mb=write_rss / 1024, plan_s=plan_s, tiles=n,
                      tiles_per_s=n / (time.perf_counter() - t),
                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def test_50k_slide_written_planned_and_streamed_in_flat_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LARGE, str(tmp_path / "big.tiff"), "50000"],
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    print(stats)
    assert stats["tiles"] > 0
    assert stats["rss_mb"] < 1024  # a level 0 alone would be 7.5 GB


def test_direct_reader_is_faster_than_openslide(cmu_svs: Path) -> None:
    from pathotune_cli.wsi import iter_tile_batches, plan_slide

    plan = plan_slide(cmu_svs, target_mpp=0.5, tissue="none")
    rates = {}
    for backend in ("tifffile", "openslide"):
        t = time.perf_counter()
        n = 0
        for _ in range(5):
            for batch in iter_tile_batches(
                cmu_svs, plan.coords, level=0, read_size=224, tile_size=224, backend=backend
            ):
                n += len(batch.tiles)
        rates[backend] = n / (time.perf_counter() - t)
    print({k: round(v) for k, v in rates.items()})
    assert rates["tifffile"] > 2 * rates["openslide"]

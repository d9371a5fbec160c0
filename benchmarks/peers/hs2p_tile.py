"""Run hs2p 6.1 (a peer tiler) on one slide, saving every tile, and print one JSON line of what it did.

    python hs2p_tile.py SLIDE OUT BACKEND WORKERS MPP TILE_PX

Runs in an interpreter that has hs2p (``make bench`` puts one in ``.venv-hs2p``), so this file imports only
hs2p and the standard library. The clock covers ``hs2p.tile_slides`` with ``save_tiles=True``: tissue
segmentation, the grid, reading and JPEG-encoding every tile into its tar, as its CLI does with
``save_tiles: true``; not the interpreter's start or hs2p's import.
"""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    """Entry point."""
    from hs2p import SegmentationConfig, SlideSpec, TilingConfig, tile_slides

    slide, out, backend, workers, mpp, size = argv
    tiling = TilingConfig(backend=backend, mask_backend=backend, requested_spacing_um=float(mpp),
                          requested_tile_size_px=int(size), tolerance=0.07, overlap=0.0)
    start = time.perf_counter()
    tile_slides([SlideSpec(sample_id=Path(slide).stem, image_path=Path(slide))], tiling=tiling,
                segmentation=SegmentationConfig(method="hsv", downsample=64), output_dir=Path(out),
                num_workers=int(workers), save_tiles=True)
    seconds = time.perf_counter() - start
    tars = sorted(Path(out).rglob("*.tiles.tar"))
    tiles = 0
    for path in tars:
        with tarfile.open(path) as tar:
            tiles += sum(1 for member in tar.getmembers() if member.name.endswith(".jpg"))
    import hs2p

    print(json.dumps({"tiles": tiles, "seconds": seconds, "backend": backend, "workers": int(workers),
                      "version": hs2p.__version__, "tars": [str(p) for p in tars]}))


if __name__ == "__main__":
    main(sys.argv[1:])

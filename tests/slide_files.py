"""Slides of other formats written by each format's own reference library from real H&E pixels, for tests.

Every file is made from a region of the CMU-1-Small-Region SVS (real H&E, 0.499 µm/px, CC0) at test time, so no
binary is committed: pylibCZIrw writes CZI, tifffile writes OME-TIFF, ome-zarr-py writes OME-Zarr. Each carries
its mpp in its own metadata. ``damaged_pyramid`` overwrites some level-0 tiles' JPEG bytes of a generic pyramid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testdata import SLIDES, require_data

CMU_MPP = 0.499


def cmu_rgb(width: int = 1024, height: int = 1536, x: int = 600, y: int = 700) -> np.ndarray:
    """A ``height`` x ``width`` RGB region of the real CMU slide (level 0), tissue and background both."""
    import tifffile

    path = require_data(SLIDES / "cmu-1-small-region.svs")
    with tifffile.TiffFile(path) as tif:
        full = tif.pages[0].asarray()
    region = np.ascontiguousarray(full[y : y + height, x : x + width, :3])
    assert region.shape == (height, width, 3), "the CMU slide is smaller than the region asked for"
    return region


def write_czi(path: Path, rgb: np.ndarray, mpp: float = CMU_MPP) -> Path:
    """A Bgr24 CZI (zstd subblocks) with its scaling, written by pylibCZIrw."""
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        czi.write(data=np.ascontiguousarray(rgb[..., ::-1]), plane={"C": 0, "T": 0, "Z": 0},
                  compression_options="zstd1:ExplicitLevel=1")
        czi.write_metadata(scale_x=mpp * 1e-6, scale_y=mpp * 1e-6)
    return path


def write_ome_tiff(path: Path, rgb: np.ndarray, mpp: float = CMU_MPP, sublevels: int = 2) -> Path:
    """A JPEG-tiled OME-TIFF with a SubIFD pyramid (factor 2) and PhysicalSizeX/Y in its OME-XML, by tifffile."""
    import tifffile

    meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp,
            "PhysicalSizeYUnit": "µm"}
    common = dict(tile=(256, 256), photometric="rgb", compression="jpeg", compressionargs={"level": 95})
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(rgb, subifds=sublevels, metadata=meta, **common)
        for level in range(1, sublevels + 1):
            tw.write(np.ascontiguousarray(rgb[:: 2**level, :: 2**level]), subfiletype=1, **common)
    return path


def write_ome_zarr(path: Path, rgb: np.ndarray, mpp: float = CMU_MPP) -> Path:
    """An OME-Zarr (NGFF, axes c y x, 3 levels) with its scale in micrometres, written by ome-zarr-py."""
    import warnings

    import zarr

    root = zarr.open_group(str(path), mode="w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own deprecated Scaler default; "no scale for axis c": channels have none
        from ome_zarr.writer import write_image

        write_image(image=np.moveaxis(rgb, -1, 0), group=root, axes="cyx", scale_factors=(2, 4),
                    scale={"y": mpp, "x": mpp}, axes_units={"y": "micrometer", "x": "micrometer"},
                    storage_options={"chunks": (3, 256, 256)})
    return path


def damaged_pyramid(path: Path, rgb: np.ndarray, damaged: list[int], mpp: float = CMU_MPP) -> Path:
    """A generic JPEG pyramid TIFF (256 px tiles, factor 2) whose level-0 tiles ``damaged`` (indices) do not decode.

    Each listed tile's bytes after its JPEG header are overwritten with zeros (the header stays, so the codec
    starts and then meets garbage: "Corrupt JPEG data"), as a failed copy leaves a scanner's tile.
    """
    import tifffile

    from pathotune_cli.wsi.synthetic import write_pyramid_tiff

    height, width = rgb.shape[:2]
    write_pyramid_tiff(path, width, height, lambda x, y, w, h: rgb[y : y + h, x : x + w], mpp=mpp, factor=2,
                       min_level_size=200)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in damaged]
    with path.open("r+b") as fh:
        for offset, count in spans:
            fh.seek(offset + count // 4)
            fh.write(b"\xff\xd9" + b"\x00" * (count - count // 4 - 2))
    return path

"""Whole-slide images: readers, mpp, tissue masks, tile grids, coordinate files and pictures.

This package sits beside ``engine`` and knows nothing of torch or models; ``runs`` joins the two. Importing it
loads numpy only: tifffile, OpenSlide, Pillow, scipy and h5py load inside the functions that use them.

The pieces ``tile`` and ``predict`` share:

- ``open_slide(path)`` -> ``SlideReader`` (direct TIFF decoder, CZI, OME-Zarr, OpenSlide, or Pillow for flat
  images), chosen by content; ``support.readable_formats()`` says which formats this install reads;
- ``find_slides(folder, suffixes)`` / ``group_slide_files(paths)``: one path per slide (a DICOM series, an MRXS
  and its data folder, an OME-Zarr folder each count once);
- ``plan_slide(path, target_mpp=..., tile_size=...)`` -> ``SlidePlan`` (level, read size, kept coords, mask);
- ``iter_tile_batches(path, coords, level=..., read_size=..., tile_size=...)`` -> ``TileBatch`` stream;
- ``for_each_tile(path, coords, func, ..., threads=n)``: ``func(tile, x, y)`` on every tile, in threads;
- ``TileDamage``: passed as ``damage=`` to the two above, tiles that do not decode are filled from a coarser level
  or left out, counted, and fail the slide past a share (``DEFAULT_MAX_DAMAGED``);
- ``convert_slide(path, out)``: any readable slide to a pyramidal generic TIFF (streamed);
- ``write_coords`` / ``read_coords`` (HDF5, CLAM and TRIDENT compatible);
- ``write_tissue_geojson`` / ``write_tiles_geojson`` / ``read_polygons`` (QuPath GeoJSON);
- ``draw_overview`` / ``draw_heatmap`` / ``save_png`` (thumbnail pictures);
- ``save_slide_thumbnail`` (``<stem>.thumb.jpg``: the plain thumbnail with its slide's level-0 size, for reports).
"""

from __future__ import annotations

from pathotune_cli.wsi.convert import ConvertResult, convert_slide
from pathotune_cli.wsi.coords_file import CoordsFile, read_coords, write_coords
from pathotune_cli.wsi.damage import DEFAULT_MAX_DAMAGED, TileDamage, write_damage_geojson
from pathotune_cli.wsi.geojson import read_polygons, write_tiles_geojson, write_tissue_geojson
from pathotune_cli.wsi.grid import TileGrid, grid_coords, level_for_footprint, make_grid, tissue_fractions
from pathotune_cli.wsi.inputs import find_slides, group_slide_files
from pathotune_cli.wsi.mpp import resolve_mpp
from pathotune_cli.wsi.open import BACKENDS, open_slide
from pathotune_cli.wsi.plan import SlidePlan, plan_slide
from pathotune_cli.wsi.reader import DamagedSlide, DamagedTile, SlideReader
from pathotune_cli.wsi.synthetic import blobs_tile_fn, write_pyramid_tiff
from pathotune_cli.wsi.thumbnail import class_colors, draw_heatmap, draw_overview, save_png
from pathotune_cli.wsi.thumbnail_file import save_slide_thumbnail, slide_thumbnail_level0_size
from pathotune_cli.wsi.tiles import TileBatch, TileReaderPool, for_each_tile, iter_tile_batches, read_batch, read_tile
from pathotune_cli.wsi.tissue import TISSUE_MODES, mask_contours, tissue_mask

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_DAMAGED",
    "TISSUE_MODES",
    "ConvertResult",
    "CoordsFile",
    "DamagedSlide",
    "DamagedTile",
    "SlidePlan",
    "SlideReader",
    "TileBatch",
    "TileGrid",
    "TileDamage",
    "TileReaderPool",
    "blobs_tile_fn",
    "class_colors",
    "convert_slide",
    "draw_heatmap",
    "draw_overview",
    "find_slides",
    "for_each_tile",
    "grid_coords",
    "group_slide_files",
    "iter_tile_batches",
    "level_for_footprint",
    "make_grid",
    "mask_contours",
    "open_slide",
    "plan_slide",
    "read_batch",
    "read_coords",
    "read_polygons",
    "read_tile",
    "resolve_mpp",
    "save_png",
    "save_slide_thumbnail",
    "slide_thumbnail_level0_size",
    "tissue_fractions",
    "tissue_mask",
    "write_damage_geojson",
    "write_coords",
    "write_pyramid_tiff",
    "write_tiles_geojson",
    "write_tissue_geojson",
]

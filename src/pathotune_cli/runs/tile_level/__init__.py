"""Tile-level tasks: the per-slide work of ``predict`` with a tile classifier."""

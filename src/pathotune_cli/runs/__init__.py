"""Runs: tune, eval, predict, tile and export as plain functions over config objects, usable from Python."""

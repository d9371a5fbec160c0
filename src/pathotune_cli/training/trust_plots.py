"""Pictures of trust: the reliability diagram ``eval`` draws, and the explanation of one tile.

Drawn like ``training.plots`` (a ``Figure`` on its own Agg canvas, written through ``files.atomic_write``), so
``pathotune --help`` never imports matplotlib and a reader never sees half a PNG.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.training.plots import _new_figure, _save_atomically

DISPLAY_SIGMA = 1 / 56
"""The explanation picture smooths the map with a Gaussian of this share of the tile's side (4 px at 224 px),
for the eye only: the map's numbers are not smoothed."""


def save_reliability_diagram(
    tables: dict[str, Sequence[dict[str, Any]]], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Accuracy against mean confidence per confidence bin, one line per set of probabilities, over the diagonal.

    Args:
        tables: Label (e.g. ``"raw (ECE 0.12)"``) to ``calibration.reliability_table`` rows.
        path: The PNG to write.
        title: Above the diagram.

    Returns:
        The path written.
    """
    fig = _new_figure((6.0, 7.0))
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="tab:gray", linewidth=1, label="perfect calibration")
    width = None
    for label, rows in tables.items():
        full = [r for r in rows if r["count"]]
        if full:
            top.plot([r["confidence"] for r in full], [r["accuracy"] for r in full], marker="o", markersize=4,
                     label=label)
        width = width or (rows[0]["high"] - rows[0]["low"] if rows else None)
        centres = [(r["low"] + r["high"]) / 2 for r in rows]
        bottom.bar(centres, [r["count"] for r in rows], width=(width or 0.05) * 0.9, alpha=0.5, label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy in the bin")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    if title:
        top.set_title(title)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("tiles")
    return _save_atomically(fig, path)


def save_explanation(
    tile: np.ndarray, attribution: np.ndarray, top: Sequence[tuple[str, float]], path: str | os.PathLike[str],
    title: str = "", lines: Sequence[str] = (),
) -> Path:
    """The tile, its attribution map over it, and the top classes with their probabilities, side by side.

    Args:
        tile: (H, W, 3) uint8 RGB.
        attribution: (H, W) non-negative map summing to 1 (``attribution.gradient_x_input``).
        top: (class, probability) pairs, most probable first.
        path: The PNG to write.
        title: Above the panels (the tile's name).
        lines: Short lines under the bars (calibration, prediction set, OOD score).

    Returns:
        The path written.
    """
    from scipy.ndimage import gaussian_filter

    h, w = attribution.shape
    shown = gaussian_filter(attribution * h * w, sigma=max(0.5, DISPLAY_SIGMA * max(h, w)))
    fig = _new_figure((11.0, 3.9))
    left, middle, right = fig.subplots(1, 3, width_ratios=[1, 1, 1.1])
    left.imshow(tile)
    left.set_title("tile", fontsize=9)
    middle.imshow(np.asarray(tile, np.float64).mean(axis=2), cmap="gray", vmin=0, vmax=255)
    image = middle.imshow(shown, cmap="inferno", alpha=0.6, vmin=0, vmax=float(np.percentile(shown, 99)) or 1.0)
    fig.colorbar(image, ax=middle, fraction=0.046, pad=0.04, label="share x pixels (1 = average)")
    middle.set_title("gradient x input, top class", fontsize=9)
    for ax in (left, middle):
        ax.set_xticks([])
        ax.set_yticks([])
    names = [name for name, _ in top][::-1]
    values = [p for _, p in top][::-1]
    right.barh(names, values, color="tab:blue")
    right.set_xlim(0, 1)
    for y, value in enumerate(values):
        right.text(min(value + 0.02, 0.8), y, f"{value:.3f}", va="center", fontsize=8)
    right.set_xlabel("probability")
    right.tick_params(labelsize=8)
    if lines:
        wrapped = [textwrap.fill(line.replace("|", " | "), width=50, break_on_hyphens=False) for line in lines]
        right.set_title("\n".join(wrapped), fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_atomically(fig, path)

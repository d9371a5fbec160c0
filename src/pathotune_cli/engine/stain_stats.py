"""Stain statistics of tiles, and whether a slide's tiles are the kind of slide a model was tuned on.

At tune, ``fit_stain_stats`` summarises the training tiles: per tile, the mean optical density of each channel
(how much stain, and of which colour) and the mean CIE a* and b* (hue) over its stained pixels, and over all its
pixels the mean lightness and the share of bright pixels (a brightfield slide has a white background and light
tissue; a fluorescence slide is dark). The centre is the median over the training tiles, the scale the spread
(1.4826 x MAD, floored); each tile's distance is the root mean square of its standardised features, and the
threshold is a high quantile of the training tiles' own distances: it comes from the training data, not from one
machine's numbers. The statistics are taken from the tiles as scanned, before any stain normalisation: they
describe the slide, not what the model makes of it.

At predict (and eval), ``check_modality`` takes a sample of a slide's tissue tiles and answers
``(stain_distance, modality_ok, reason)``: the median of the sample's tile distances against the threshold (and a
sample darker than all but 1 % of the training tiles, with almost no bright pixels, is not brightfield whatever
its distance), and in words which statistic is furthest from training.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import Field

from pathotune_cli.config.schema import Strict

FEATURES = ("od_red", "od_green", "od_blue", "lab_a", "lab_b", "lightness", "bright_share")
FLOORS = (0.02, 0.02, 0.02, 1.0, 1.0, 2.0, 0.02)
"""Least spread of each feature (ours): a training set of near-identical tiles still tolerates a rescan."""
QUANTILE = 0.99
"""The threshold's quantile of the training tiles' own distances (ours)."""
STAINED_OD = 0.15 / np.log(10)
"""A pixel whose optical density (base 10) is at least this in every channel is stained tissue (Macenko's 0.15
in natural log); the density and hue statistics are taken over those pixels."""
BRIGHT = 0.8
"""Lightness (0-1) above which a pixel counts as bright background."""
CHECK_TILES = 64
"""Tissue tiles of a slide the check looks at (ours): enough for a stable median, cheap to read."""
_MAD_TO_SD = 1.4826


class StainStats(Strict):
    """The training tiles' stain statistics, stored in the prompt file's header (``stain_stats``)."""

    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    centre: list[float]
    """Median of each feature over the training tiles."""
    scale: list[float]
    """Spread of each feature (1.4826 x MAD, at least its floor)."""
    low: list[float]
    """1st percentile of each feature over the training tiles."""
    high: list[float]
    """99th percentile of each feature over the training tiles."""
    quantile: float = QUANTILE
    threshold: float = Field(gt=0)
    """The ``quantile`` of the training tiles' own distances: a slide further than this is not what it knows."""
    tiles: int = Field(ge=1)
    normalised: bool = False
    """Whether the statistics were taken after the model's stain normalisation (they are not: the check sees
    the slide as scanned)."""


class ModalityCheck(NamedTuple):
    """A slide's stain distance from the training tiles, whether it is the kind the model knows, and why not."""

    stain_distance: float
    modality_ok: bool
    reason: str


def tile_features(tiles: np.ndarray) -> np.ndarray:
    """(N, 7) stain statistics of uint8 RGB tiles (N, H, W, 3), in the order of ``FEATURES``."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must be uint8 (N, H, W, 3), got shape {tiles.shape}")
    rgb = tiles.astype(np.float32) / 255.0
    od = -np.log10((tiles.astype(np.float32) + 1.0) / 256.0)
    lab = _rgb_to_lab(rgb)
    stained = (od >= STAINED_OD).all(axis=-1)
    few = stained.mean(axis=(1, 2)) < 0.01  # a tile of glass: its stain statistics over every pixel
    weight = np.where(few[:, None, None], 1.0, stained).astype(np.float32)[..., None]
    total = weight.sum(axis=(1, 2))
    od_mean = (od * weight).sum(axis=(1, 2)) / total
    ab_mean = (lab[..., 1:] * weight).sum(axis=(1, 2)) / total
    lightness = lab[..., 0]
    return np.concatenate([
        od_mean, ab_mean, lightness.mean(axis=(1, 2))[:, None], (lightness > BRIGHT * 100).mean(axis=(1, 2))[:, None],
    ], axis=1).astype(np.float64)


def fit_stain_stats(tiles: np.ndarray) -> StainStats:
    """The statistics of training tiles (N, H, W, 3) uint8 and the distance threshold they set."""
    features = tile_features(tiles)
    centre = np.median(features, axis=0)
    scale = np.maximum(_MAD_TO_SD * np.median(np.abs(features - centre), axis=0), FLOORS)
    distances = _distances(features, centre, scale)
    threshold = float(max(np.quantile(distances, QUANTILE), 1.0))
    return StainStats(
        centre=centre.tolist(), scale=scale.tolist(), low=np.quantile(features, 0.01, axis=0).tolist(),
        high=np.quantile(features, 0.99, axis=0).tolist(), threshold=threshold, tiles=len(features),
    )


def tile_distances(stats: StainStats, tiles: np.ndarray) -> np.ndarray:
    """Each tile's distance (N,) from the training tiles' statistics."""
    return _distances(tile_features(tiles), np.asarray(stats.centre), np.asarray(stats.scale))


def set_distance(stats: StainStats, tiles: np.ndarray) -> float:
    """The median tile distance of a set of tiles: what ``check_modality`` compares with the threshold."""
    return float(np.median(tile_distances(stats, tiles)))


def check_modality(stats: StainStats, tiles: np.ndarray) -> ModalityCheck:
    """Whether a sample of a slide's tissue tiles (N, H, W, 3) uint8 looks like the training tiles.

    Returns:
        ``(stain_distance, modality_ok, reason)``: the median tile distance, whether it is within the training
        data's own threshold, and (when not) which statistic is furthest and which way, in words.
    """
    tiles = np.asarray(tiles)
    if len(tiles) == 0:
        return ModalityCheck(float("nan"), True, "")
    features = tile_features(tiles)
    centre, scale = np.asarray(stats.centre), np.asarray(stats.scale)
    distance = float(np.median(_distances(features, centre, scale)))
    median = np.median(features, axis=0)
    if distance <= stats.threshold and not _dark(stats, median):
        return ModalityCheck(distance, True, "")
    return ModalityCheck(distance, False, _reason(stats, median, distance))


def sample_index(count: int, sample: int = CHECK_TILES, seed: int = 0) -> np.ndarray:
    """Which of a slide's ``count`` tissue tiles ``check_modality`` looks at: up to ``sample``, seeded, sorted."""
    return np.sort(np.random.default_rng(seed).permutation(count)[:sample])


def modality_warning(name: str, check: ModalityCheck, strict_hint: bool = True) -> str | None:
    """The warning line for a slide or tile set whose check failed, naming it; None when it passed.

    ``strict_hint``: end by saying that ``--strict`` makes it a failure (for commands that have ``--strict``).
    """
    if check.modality_ok:
        return None
    return (f"{name} is not the kind of slide this model was tuned on: {check.reason}; its predictions are not "
            "to be trusted" + (" (--strict makes this a failure)" if strict_hint else ""))


def _distances(features: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(((features - centre) / scale) ** 2, axis=1))


def _dark(stats: StainStats, median: np.ndarray) -> bool:
    """Darker than all but 1 % of the training tiles, with almost no bright pixels: not brightfield."""
    at = FEATURES.index
    return bool(median[at("lightness")] < stats.low[at("lightness")] and median[at("bright_share")] < 0.05)


def _reason(stats: StainStats, median: np.ndarray, distance: float) -> str:
    z = (median - np.asarray(stats.centre)) / np.asarray(stats.scale)
    index = dict(zip(FEATURES, range(len(FEATURES)), strict=True))
    far = (f"stain distance {distance:.1f} (the training tiles' {stats.quantile:.0%} quantile is "
           f"{stats.threshold:.1f})")
    if _dark(stats, median):
        return f"dark, not a brightfield stain (a fluorescence or unstained slide?); {far}"
    worst = FEATURES[int(np.argmax(np.abs(z)))]
    what = {"od_red": "optical density", "od_green": "optical density", "od_blue": "optical density",
            "lab_a": "hue", "lab_b": "hue", "lightness": "lightness", "bright_share": "background"}[worst]
    side = "above" if z[index[worst]] > 0 else "below"
    return f"{what} ({worst}) far {side} the training range (another stain, e.g. IHC?); {far}"


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB (..., 3) in [0, 1] to CIE LAB (D65), L in 0-100."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]], np.float32)
    xyz = lin @ matrix.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)

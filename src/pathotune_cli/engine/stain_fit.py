"""Fit a stain reference with torchstain: on a seeded sample of the training tiles, or on the user's images.

The fitted tensors go into the prompt file (``stain.*``) and into ``engine.stain.StainNormaliser``, which applies
them inside the model. The default reference is a robust summary of the training tiles: torchstain's fit on the
pixels of up to ``reference_tiles`` tiles drawn with the run's seed, so Macenko's own percentiles (1 % and 99 %)
set the stain vectors and maximum concentrations over the whole sample, not one tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from pathotune_cli.config.run import StainSettings
from pathotune_cli.engine.header import StainSpec
from pathotune_cli.engine.stain import ALPHA, BETA, IO, MIN_STAINED, REFERENCE_TENSORS, StainNormaliser
from pathotune_cli.errors import BadInput
from pathotune_cli.formats import TILE_IMAGE_SUFFIXES

STATS_TILES = 512
"""Training tiles (a seeded sample) the stain statistics of the modality check are taken from (ours)."""
REFERENCE_FIX = "pass --stain-reference an H&E image (or folder of images) with stained tissue, or --stain none"


class TileStore(Protocol):
    """Tiles by index as uint8 (B, 3, S, S) (``training.images.ImageStore``)."""

    def __len__(self) -> int:
        """How many tiles."""

    def batch(self, index: Sequence[int]) -> torch.Tensor:
        """uint8 (B, 3, S, S) tiles at ``index``."""


def fit_reference(method: str, pixels: torch.Tensor, where: str) -> dict[str, torch.Tensor]:
    """The torchstain fit of ``method`` on uint8 RGB pixels (3, P): the reference tensors by name.

    Raises:
        BadInput: the pixels hold too little stain to fit (``where`` names them).
    """
    from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer

    image = pixels.reshape(3, 1, -1)
    try:
        if method == "macenko":
            od = -torch.log((image.reshape(3, -1).T.float() + 1) / IO)
            if int((od >= BETA).all(dim=1).sum()) < MIN_STAINED:
                raise ValueError("no stained pixels")
            macenko = TorchMacenkoNormalizer()
            macenko.fit(image, Io=IO, alpha=ALPHA, beta=BETA)
            fitted = {"he_ref": macenko.HERef, "max_c_ref": macenko.maxCRef}
        else:
            reinhard = TorchReinhardNormalizer()
            reinhard.fit(image)
            fitted = {"lab_mean": reinhard.target_means, "lab_std": reinhard.target_stds}
    except (RuntimeError, ValueError, IndexError) as exc:
        raise BadInput(f"cannot fit {method} stain normalisation to {where} ({str(exc).splitlines()[0][:80]})",
                       REFERENCE_FIX) from None
    tensors = {k: v.detach().float().reshape(-1 if v.dim() == 1 else v.shape) for k, v in fitted.items()}
    if not all(torch.isfinite(v).all() for v in tensors.values()) or (
            method == "reinhard" and bool((tensors["lab_std"] <= 0).any())):
        raise BadInput(f"{method} stain normalisation fitted to {where} is degenerate (no stain variation)",
                       REFERENCE_FIX)
    return tensors


def tiles_reference(method: str, store: TileStore, count: int, seed: int) -> tuple[StainNormaliser, StainSpec]:
    """The default reference: torchstain's fit on the pixels of up to ``count`` training tiles drawn with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(store), generator=generator)[:count].sort().values.tolist()
    tiles = store.batch(index)
    where = f"{len(index)} of {len(store)} training tiles (seed {seed})"
    return _normaliser(method, fit_reference(method, _pixels(tiles), where), where)


def image_reference(method: str, path: Path) -> tuple[StainNormaliser, StainSpec]:
    """A reference fitted to one image, or to the pixels of every image in a folder (``--stain-reference``).

    Raises:
        BadInput: no such file or folder, a folder without images, an unreadable image, or no stain to fit.
    """
    from pathotune_cli.imaging import read_rgb

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TILE_IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise BadInput(f"stain reference folder {path} holds no images", REFERENCE_FIX)
    elif path.is_file():
        files = [path]
    else:
        raise BadInput(f"stain reference {path} does not exist", REFERENCE_FIX)
    pixels = torch.cat([torch.from_numpy(read_rgb(f).rgb.copy()).reshape(-1, 3).T for f in files], dim=1)
    where = str(path) if len(files) == 1 else f"{len(files)} images in {path}"
    return _normaliser(method, fit_reference(method, pixels, where), where)


def prepare_stain(model: torch.nn.Module, settings: StainSettings, store: TileStore, seed: int) -> dict[str, Any]:
    """Fit what ``tune`` stores about stain, for the prompt file's header.

    The normalisation ``settings`` ask for (set on ``model.stain``), and the training tiles' stain statistics as
    scanned (``engine.stain_stats``).

    Raises:
        BadInput: a reference that cannot be read or holds no stain to fit.
    """
    from pathotune_cli.engine.stain_stats import fit_stain_stats

    header: dict[str, Any] = {}
    if settings.method != "none":
        if settings.reference:
            normaliser, spec = image_reference(settings.method, Path(settings.reference))
        else:
            normaliser, spec = tiles_reference(settings.method, store, settings.reference_tiles, seed)
        model.stain = normaliser
        header["stain"] = spec
    generator = torch.Generator().manual_seed(int(seed) + 1)
    index = torch.randperm(len(store), generator=generator)[:STATS_TILES].sort().values.tolist()
    header["stain_stats"] = fit_stain_stats(store.batch(index).permute(0, 2, 3, 1).numpy())
    return header


def _pixels(tiles: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 tiles to (3, B*H*W) pixels."""
    return tiles.permute(1, 0, 2, 3).reshape(3, -1)


def _normaliser(method: str, tensors: dict[str, torch.Tensor], where: str) -> tuple[StainNormaliser, StainSpec]:
    from importlib.metadata import version

    spec = StainSpec(method=method, reference=where,  # type: ignore[arg-type]
                     library=f"torchstain {version('torchstain')}",
                     tensors=list(REFERENCE_TENSORS[method]))
    return StainNormaliser(method, tensors), spec

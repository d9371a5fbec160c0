"""An export checked against PyTorch: the tiles it is run on (synthetic, and real ones from ``--check-data``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, note
from pathotune_cli.formats import TILE_IMAGE_SUFFIXES as IMAGE_SUFFIXES

if TYPE_CHECKING:
    import torch

    from pathotune_cli.engine.model import PromptedModel

SYNTHETIC_NOISE_TILES = 4
"""Uniform-noise tiles in every check; plus one synthetic H&E-like tile per demo class."""


def check_against_pytorch(model: PromptedModel, out: Path, fmt: str, size: int, real: torch.Tensor | None,
                          real_data: Path | None,
                          report: Reporter, temperature: float = 1.0) -> dict[str, Any]:
    """PyTorch against the saved export on synthetic and real tiles, as uint8 and float32; refusals probed.

    Returns:
        The check's record for the result and the card.

    Raises:
        PathotuneError: the export differs from PyTorch above ``TOLERANCE``, does not run, or accepts a wrong input.
    """
    import torch

    from pathotune_cli.engine.export import TOLERANCE
    from pathotune_cli.engine.export_run import check_export

    synthetic = synthetic_tiles(size)
    tiles = synthetic if real is None else torch.cat([synthetic, real])
    note(report, f"checking against PyTorch on {len(tiles)} tiles, as uint8 and as float32")
    found = check_export(model, out, fmt, tiles, TOLERANCE, temperature=temperature)
    note(report, f"largest probability difference {found['max_abs_diff']:.2e} (allowed {TOLERANCE:.0e}); "
                 f"refuses {', '.join(found['refuses'])}")
    return {
        **found, "tolerance": TOLERANCE, "tiles": len(tiles), "synthetic_tiles": len(synthetic),
        "real_tiles": 0 if real is None else len(real), "real_data": None if real_data is None else str(real_data),
        "passed": True,
    }


def synthetic_tiles(size: int) -> torch.Tensor:
    """Uniform noise plus one H&E-like texture per demo class: cheap, seeded, and not all saturated."""
    import numpy as np
    import torch

    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(SYNTHETIC_NOISE_TILES, 3, size, size), dtype=np.uint8)
    textures = np.stack([texture(i, size, size, rng).transpose(2, 0, 1) for i in range(len(DEMO_CLASSES))])
    return torch.from_numpy(np.concatenate([noise, textures]))


def real_tiles(folder: Path, size: int, limit: int) -> torch.Tensor:
    """Up to ``limit`` real tiles from ``folder``, resized to the input size as ``pathotune`` reads tiles.

    Raises:
        BadInput: the folder holds no images.
    """
    import torch

    from pathotune_cli.training.images import decode_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BadInput(
            f"--check-data {folder} holds no images", f"pass a folder of tiles ({', '.join(IMAGE_SUFFIXES)})"
        )
    if len(paths) > limit:  # spread over the sorted list, so every class folder is sampled
        step = (len(paths) - 1) / max(1, limit - 1)
        paths = [paths[round(i * step)] for i in range(limit)]
    return torch.stack([torch.from_numpy(decode_image(p, size)) for p in paths])

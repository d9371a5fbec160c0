"""Whether a slide is the kind of slide a prompt file was tuned on, as columns of the per-slide summary row.

A sample of its tissue tiles is compared with the training tiles' stain statistics (``engine.stain_stats``).

``predict`` (and any per-slide command) calls ``slide_modality`` once per slide with the tiles it planned; the row
gains ``stain_distance``, ``modality_ok`` and ``modality_reason``, and ``modality_warning`` gives the line that
names the slide. A prompt file without stain statistics (made before they existed) gives no columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.engine.stain_stats import ModalityCheck, StainStats, check_modality, sample_index
from pathotune_cli.engine.stain_stats import modality_warning as modality_warning


def slide_modality(stats: StainStats | None, slide: str | Path, coords: np.ndarray, level: int, read_size: int,
                   tile_size: int, backend: str = "auto", seed: int = 0) -> ModalityCheck | None:
    """The check of one slide: up to 64 of its planned tissue tiles (seeded), read as ``predict`` reads them.

    Args:
        stats: The prompt file's ``header.stain_stats`` (None: no check, None back).
        slide: The slide file.
        coords: Its planned level-0 tile corners (N, 2), as ``predict`` infers them.
        level: The level they are read at.
        read_size: Pixels read per tile at ``level``.
        tile_size: Side of the tiles the model sees.
        backend: The reader backend the plan used.
        seed: Which tiles are sampled.

    Returns:
        ``(stain_distance, modality_ok, reason)``, or None without statistics or tiles.
    """
    from pathotune_cli.wsi import open_slide
    from pathotune_cli.wsi.tiles import read_batch

    if stats is None or len(coords) == 0:
        return None
    from pathotune_cli.wsi.damage import TileDamage

    index = sample_index(len(coords), seed=seed)
    with open_slide(slide, backend) as reader:  # a damaged tile is filled or white here; the inference counts it
        tiles = read_batch(reader, np.asarray(coords)[index], level, read_size, tile_size,
                           damage=TileDamage(Path(slide).name, max_share=None))
    return check_modality(stats, tiles)


def modality_columns(check: ModalityCheck | None) -> dict[str, Any]:
    """The summary row's columns for a check (none without one)."""
    if check is None:
        return {}
    return {"stain_distance": round(check.stain_distance, 4), "modality_ok": check.modality_ok,
            "modality_reason": check.reason}

"""The controlled shifts of ``eval --robustness``: each family moves real tiles more as it grows stronger, keeps
their shape and dtype, and shifts a tile the same way whatever batch it comes in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathotune_cli.training.shifts import FAMILIES, Shift, all_shifts, apply_shift

from testdata import KATHER, require_data


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    from PIL import Image

    paths = sorted(require_data(KATHER).rglob("*.png"))[::8]
    return torch.from_numpy(np.stack([np.array(Image.open(p).convert("RGB"))[:112, :112] for p in paths])
                            ).permute(0, 3, 1, 2).contiguous()


def test_every_family_moves_tiles_more_as_it_grows_stronger(tiles: torch.Tensor) -> None:
    index = np.arange(len(tiles))
    for family, (_, levels) in FAMILIES.items():
        change = []
        for rank, strength in enumerate(levels, start=1):
            out = apply_shift(Shift(family, strength, rank), tiles, index)
            assert out.dtype == torch.uint8 and out.shape == tiles.shape
            change.append(float((out.float() - tiles.float()).abs().mean()))
        assert 0 < change[0] and change == sorted(change), (family, change)


def test_a_tile_is_shifted_the_same_way_in_any_batch(tiles: torch.Tensor) -> None:
    shift = next(s for s in all_shifts() if s.family == "stain" and s.rank == 2)
    index = np.arange(len(tiles))
    together = apply_shift(shift, tiles, index, seed=4)
    alone = torch.cat([apply_shift(shift, tiles[i : i + 1], index[i : i + 1], seed=4) for i in range(len(tiles))])
    assert torch.equal(together, alone)

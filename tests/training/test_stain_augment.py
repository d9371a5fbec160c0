"""Stain augmentation (HED jitter, stain-matrix perturbation): identity at zero strength, bounded, growing with its
setting, drawn only when on (old runs draw what they drew), and a resumed run with it stays bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.config.run import AugmentSettings
from pathotune_cli.training.augment import DRAWS, STAIN_DRAWS, augment, augment_draws, stain_jitter

from testdata import KATHER, require_data


def _tiles() -> torch.Tensor:
    import numpy as np
    from PIL import Image

    paths = sorted(require_data(KATHER).rglob("*.png"))[::10]
    return torch.from_numpy(np.stack([np.array(Image.open(p).convert("RGB"))[:96, :96] for p in paths])
                            ).permute(0, 3, 1, 2).float() / 255


def test_zero_strength_gives_back_the_tiles() -> None:
    tiles = _tiles()
    out = stain_jitter(tiles, torch.zeros(len(tiles), STAIN_DRAWS), hed=0.05, matrix=0.05)
    assert float((out - tiles.clamp(min=1e-6)).abs().max()) < 1e-4


def test_stronger_jitter_moves_colours_further_and_stays_in_range() -> None:
    tiles = _tiles()
    u = torch.rand(len(tiles), STAIN_DRAWS, generator=torch.Generator().manual_seed(0)) * 2 - 1
    change = []
    for strength in (0.02, 0.1, 0.3):
        out = stain_jitter(tiles, u, hed=strength, matrix=strength)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        change.append(float((out - tiles).abs().mean()))
    assert 0 < change[0] < change[1] < change[2]


def test_draws_without_stain_augmentation_are_what_they_were() -> None:
    before = torch.rand(5, DRAWS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(augment_draws(5, torch.Generator().manual_seed(3), AugmentSettings()), before)
    on = augment_draws(5, torch.Generator().manual_seed(3), AugmentSettings(hed=0.05))
    assert on.shape == (5, DRAWS + STAIN_DRAWS)


def test_augment_with_stain_settings_is_seeded() -> None:
    tiles = _tiles()
    settings = AugmentSettings(hed=0.05, stain_matrix=0.05)
    a = augment(tiles.clone(), settings, torch.Generator().manual_seed(1))
    b = augment(tiles.clone(), settings, torch.Generator().manual_seed(1))
    c = augment(tiles.clone(), settings, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
def test_killed_run_with_stain_augmentation_resumes_bit_identical(tmp_path: Path) -> None:
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.events import EpochDone
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    data = write_demo_tiles(tmp_path / "tiles", per_class=4, size=64, seed=3)

    def config(out: Path):
        return resolve_config(TuneOptions(
            preset="demo", data=str(data), backbone="tiny-random", out=str(out), epochs=2, seed=5, precision="fp32",
            sets=["train.batch_size=8", "train.patience=null", "backbone.input_size=64", "train.augment.hed=0.05",
                  "train.augment.stain_matrix=0.05"]))

    class Killed(Exception):
        pass

    def kill(event: object) -> None:
        if isinstance(event, EpochDone) and event.row["epoch"] == 1:
            raise Killed

    straight = tune_run(config(tmp_path / "straight"))
    with pytest.raises(Killed):
        tune_run(config(tmp_path / "killed"), report=kill)
    resumed = tune_run(config(tmp_path / "killed"), resume=True)
    assert resumed.resumed_from == 1
    a, b = read_prompt_file(straight.prompts).tensors, read_prompt_file(resumed.prompts).tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]

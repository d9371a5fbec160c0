"""Gradient x input maps: the tile's shape, non-negative, summing to 1, and they follow the evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathotune_cli.config.run import PromptSettings
from pathotune_cli.training.attribution import gradient_x_input, normalise_map


@pytest.fixture(scope="module")
def model(demo_task_module):
    from pathotune_cli.engine import build_prompted_model

    from testdata import tiny_preset

    torch.manual_seed(0)
    return build_prompted_model(demo_task_module, tiny_preset(), PromptSettings(method="pathotune")).model.eval()


@pytest.fixture(scope="module")
def demo_task_module():
    from pathotune_cli.config import load_task_preset

    return load_task_preset("demo")


@pytest.mark.parametrize("side", [64, 96])  # the model's input size, and a tile it resizes itself
def test_maps_have_the_tiles_shape_and_sum_to_one(model, side: int) -> None:
    images = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(side))
    maps, logits, features = gradient_x_input(model, images)
    assert maps.shape == (3, side, side)
    assert (maps >= 0).all()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-9)
    assert logits.shape == (3, 4) and features.shape[0] == 3
    with torch.no_grad():
        direct = model(images).numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5 * np.abs(direct).max())


def test_a_map_of_zeros_becomes_uniform() -> None:
    maps = normalise_map(np.zeros((2, 4, 5)))
    np.testing.assert_allclose(maps, 1 / 20)


def test_pixels_the_model_cannot_see_get_no_attribution(model) -> None:
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images[:, :, :, :32] = 0.0  # black left half: gradient x input is zero there by construction
    maps, _, _ = gradient_x_input(model, images, target=torch.tensor([2]))
    assert maps[0, :, :32].sum() == pytest.approx(0.0, abs=1e-12)
    assert maps[0, :, 32:].sum() == pytest.approx(1.0)

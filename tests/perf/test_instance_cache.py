"""Cached instance features (computed once per run) are the features the model would compute itself.

``fit`` encodes every training tile once with ``encode_instances`` (un-augmented, in the run's precision) and
feeds the cache to each step instead of running the instance encoder again. These tests hold the cache to
``PromptedModel.instance_features`` on the same tiles, and the logits made from the cache to the logits the
model makes when it encodes the instance itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathotune_cli.config.run import PromptSettings, TrainSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.text import hash_encode
from pathotune_cli.hardware import Placement
from pathotune_cli.training.images import to_float
from pathotune_cli.training.loop import Split, encode_instances, fit

from testdata import MemoryStore, assert_close_to_scale


def _model(tiny_preset, demo_task, **preset) -> PromptedModel:
    from pathotune_cli.backbones import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(tiny_preset(**preset))
    return PromptedModel(
        backbone, PromptSettings(method="pathotune"), 4, hash_encode(demo_task.texts())
    ).eval()


def _tiles(n: int = 12, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return (torch.rand(n, 3, size, size, generator=gen) * 255).to(torch.uint8)


def test_cache_equals_fresh_features_in_fp32(tiny_preset, demo_task) -> None:
    model = _model(tiny_preset, demo_task)
    tiles = _tiles()
    placement = Placement("cpu", "fp32", "test")
    cached = encode_instances(model, MemoryStore(tiles), batch_size=5, placement=placement)  # batches of 5, 5, 2
    with torch.no_grad():
        fresh = model.instance_features(to_float(tiles))  # one batch of 12
    assert cached.shape == fresh.shape == (12, model.backbone.feature_dim)
    assert_close_to_scale(cached, fresh)  # only GEMM blocking differs


def test_logits_from_the_cache_equal_logits_computed_in_place(tiny_preset, demo_task) -> None:
    model = _model(tiny_preset, demo_task)
    images = to_float(_tiles())
    placement = Placement("cpu", "fp32", "test")
    cached = encode_instances(model, MemoryStore(_tiles()), batch_size=12, placement=placement)
    with torch.no_grad():
        from_cache = model(images, cached)
        in_place = model(images)  # the model runs its instance encoder itself
    assert_close_to_scale(from_cache, in_place)


def test_cache_in_bf16_matches_fresh_bf16_features(tiny_preset, demo_task) -> None:
    model = _model(tiny_preset, demo_task)
    tiles = _tiles()
    placement = Placement("cpu", "bf16", "test")
    cached = encode_instances(model, MemoryStore(tiles), batch_size=12, placement=placement)
    with torch.no_grad(), placement.autocast():
        fresh = model.instance_features(to_float(tiles)).float()
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)  # same batch, same precision: bit-identical


def test_fit_trains_on_the_features_the_model_computes(tiny_preset, demo_task) -> None:
    """The cache fit keeps is what ``instance_features`` gives for the un-augmented training tiles."""
    model = _model(tiny_preset, demo_task)
    tiles = _tiles(16)
    settings = TrainSettings(epochs=2, batch_size=8, patience=None)
    result = fit(
        model, Split(MemoryStore(tiles), np.arange(16) % 4), None, settings, Placement("cpu", "fp32", "test"), 0
    )
    assert model.instance_images_encoded == 16  # once per tile for the run, not once per epoch
    with torch.no_grad():
        fresh = model.instance_features(to_float(tiles))
    assert_close_to_scale(result.instance_cache["train"], fresh)


@pytest.mark.parametrize("layout", ["registers", "no_cls"])
def test_cache_matches_for_other_token_layouts(tiny_preset, demo_task, layouts, layout) -> None:
    model = _model(tiny_preset, demo_task, **layouts[layout])
    tiles = _tiles(6)
    placement = Placement("cpu", "fp32", "test")
    cached = encode_instances(model, MemoryStore(tiles), batch_size=4, placement=placement)
    with torch.no_grad():
        assert_close_to_scale(model(to_float(tiles), cached), model(to_float(tiles)))

"""The backbone stays frozen: no gradients, eval mode while training, weights bit-identical afterwards."""

from __future__ import annotations

import numpy as np
import torch

from pathotune_cli.config.run import PromptSettings, TrainSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.text import hash_encode
from pathotune_cli.hardware import Placement
from pathotune_cli.training.loop import Split, fit

from testdata import MemoryStore


def test_frozen_backbone_is_bit_identical_after_training(tiny_preset, demo_task, layouts) -> None:
    from pathotune_cli.backbones import load_backbone

    backbone = load_backbone(tiny_preset(**layouts["registers"]))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = PromptedModel(backbone, PromptSettings(method="pathotune"), 4, hash_encode(demo_task.texts()))
    assert not any(p.requires_grad for p in backbone.parameters())
    modes: list[bool] = []
    backbone.vit.blocks[0].register_forward_hook(lambda m, i, o: modes.append(m.training))
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 3, 64, 64, generator=gen) * 255).to(torch.uint8)
    labels = np.arange(16) % 4
    fit(
        model, Split(MemoryStore(images), labels), None, TrainSettings(epochs=2, batch_size=8, lr=1e-2),
        Placement("cpu", "fp32", "test"), 0,
    )
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert modes and not any(modes)  # frozen blocks ran in eval mode throughout
    trained = model.trained_state()
    assert trained and not any(k.startswith("backbone.") for k in trained)


def test_full_method_trains_the_backbone(tiny_preset) -> None:
    from pathotune_cli.backbones import load_backbone

    backbone = load_backbone(tiny_preset())
    model = PromptedModel(backbone, PromptSettings(method="full"), 3)
    assert all(p.requires_grad for p in backbone.parameters())
    assert model.trainable_parameters() == model.backbone_parameters() + 64 * 3 + 3

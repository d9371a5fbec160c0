"""bf16 autocast predicts what fp32 predicts: the same top class on >= 99% of tiles, probabilities within 0.02.

The model is a small ``pathotune`` prompted model whose head is fitted (ridge regression on its own fp32
features, logits scaled to a few units as a trained head's are); a random head on random features would sit
on near-ties and test noise rather than precision. Predictions go through ``training.loop.predict_probs``,
the path ``eval`` and image ``predict`` take, once per placement.
"""

from __future__ import annotations

import numpy as np
import torch

from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.text import hash_encode
from pathotune_cli.hardware import Placement, cpu_has_fast_bf16, place
from pathotune_cli.training.loop import predict_probs

from testdata import MemoryStore

TILES = 120
LOGIT_SPAN = 4.0


def _textures(n: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    from pathotune_cli.demo_data import DEMO_CLASSES, texture

    rng = np.random.default_rng(0)
    images = np.stack([texture(i % len(DEMO_CLASSES), size, size, rng).transpose(2, 0, 1) for i in range(n)])
    return torch.from_numpy(images), np.arange(n) % len(DEMO_CLASSES)


def _fit_head(model: PromptedModel, images: torch.Tensor, labels: np.ndarray) -> None:
    with torch.no_grad():
        f = model.features(images.float() / 255).double()
    mean = f.mean(0, keepdim=True)
    fc = f - mean
    y = torch.full((len(labels), 4), -LOGIT_SPAN / 2, dtype=torch.float64)
    y[torch.arange(len(labels)), torch.as_tensor(labels)] = LOGIT_SPAN / 2
    gram = fc.T @ fc
    w = torch.linalg.solve(
        gram + 0.1 * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64), fc.T @ y
    )
    scale = LOGIT_SPAN / float((fc @ w).std(0).mean() * 2)
    with torch.no_grad():
        model.head.weight.copy_((w * scale).T.float())
        model.head.bias.copy_((-(mean @ w) * scale).squeeze(0).float())


def test_bf16_and_fp32_predictions_agree(tiny_preset, demo_task) -> None:
    from pathotune_cli.backbones import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(
        tiny_preset(model_kwargs={"depth": 4, "embed_dim": 192, "num_heads": 3}, width=192)
    )  # tiny-random's shape
    model = PromptedModel(
        backbone, PromptSettings(method="pathotune"), 4, hash_encode(demo_task.texts())
    ).eval()
    images, labels = _textures(TILES, 64)
    _fit_head(model, images, labels)
    store = MemoryStore(images)
    p32 = predict_probs(model, store, 32, Placement("cpu", "fp32", "test"))
    p16 = predict_probs(model, store, 32, Placement("cpu", "bf16", "test"))
    assert (p32.argmax(1) == labels).mean() > 0.5  # the head is a real classifier, not a coin
    assert np.median(p32.max(1)) < 0.995  # and not saturated, where any precision agrees trivially
    agree = (p32.argmax(1) == p16.argmax(1)).mean()
    assert agree >= 0.99, f"top class agrees on {agree:.1%} of tiles"
    diff = np.abs(p32 - p16).max()
    assert diff <= 0.02, f"probabilities differ by up to {diff:.4f}"


def test_auto_picks_bf16_only_where_the_cpu_runs_it_fast() -> None:
    chosen = place("cpu", "auto")
    assert chosen.precision == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert place("cpu", "fp32").autocast_dtype is None

"""The heads fitted without gradients give the decisions of their textbook definitions."""

from __future__ import annotations

import numpy as np
import torch

from pathotune_cli.engine.heads import KNNHead, PrototypeHead


def _data(n: int = 60, d: int = 16, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % c
    centres = torch.randn(c, d, generator=g) * 2
    return centres[labels] + torch.randn(n, d, generator=g), labels


def test_prototypes_pick_the_nearest_class_mean_of_centred_normalised_features() -> None:
    feats, labels = _data()
    head = PrototypeHead(16, 3)
    head.fit(feats[:45], labels[:45])
    x = feats[:45].numpy()
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = z.mean(0)

    def cl2n(a: np.ndarray) -> np.ndarray:  # SimpleShot: L2-normalise, centre by the training mean, normalise
        u = a / np.linalg.norm(a, axis=1, keepdims=True) - mean
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    protos = np.stack([cl2n(x)[labels[:45].numpy() == k].mean(0) for k in range(3)])
    test = cl2n(feats[45:].numpy())
    want = ((test[:, None] - protos[None]) ** 2).sum(-1).argmin(1)
    assert (head(feats[45:]).argmax(1).numpy() == want).all()


def test_knn_with_k_1_takes_the_label_of_the_most_similar_training_tile() -> None:
    feats, labels = _data()
    head = KNNHead(16, 3, k=1, temperature=0.07)
    head.fit(feats[:45], labels[:45])
    sims = torch.nn.functional.normalize(feats[45:], dim=-1) @ torch.nn.functional.normalize(feats[:45], dim=-1).t()
    want = labels[:45][sims.argmax(1)]
    logits = head(feats[45:])
    assert torch.equal(logits.argmax(1), want) and torch.isfinite(logits).all()
    probs = torch.softmax(logits, dim=-1)
    assert torch.allclose(probs.sum(-1), torch.ones(15)) and bool((probs.max(-1).values > 0.99).all())


def test_knn_resizes_to_a_stored_bank_before_loading() -> None:
    head = KNNHead(16, 3, k=5, temperature=0.07)
    stored = {"head.bank": torch.zeros(7, 16), "head.bank_labels": torch.zeros(7, dtype=torch.long)}
    head.resize_like(stored, "head.")
    assert head.bank.shape == (7, 16) and head.bank_labels.shape == (7,)

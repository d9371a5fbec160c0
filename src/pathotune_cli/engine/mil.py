"""Multiple-instance aggregators: a slide's tile features (N, D) to slide logits (C,) and attention (N,).

- ``mean``: the mean of the tile features, then a linear head. A floor to compare against.
- ``abmil``: gated attention MIL (Ilse, Tomczak and Welling, ICML 2018): features projected to ``hidden``,
  attention ``w^T (tanh(V h) * sigmoid(U h))`` softmaxed over the tiles, the attention-weighted mean, a head.
- ``clam-sb``: CLAM single-branch (Lu et al., Nature Biomedical Engineering 2021): the same gated attention, and
  an instance loss: per class a 2-way classifier learns that the ``k`` most attended tiles of a slide of that
  class are positive and its ``k`` least attended negative (for other classes, with more than two classes, that
  the most attended tiles are negative); the training loss is ``bag_weight * slide + (1 - bag_weight) * instance``.

Widths, dropout, ``k`` and ``bag_weight`` are settings (``config.run.MILSettings``); ours follow CLAM-SB.
Every aggregator takes one bag at a time (no padding), so a bag is any number of tiles, even one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pathotune_cli.config.run import MILSettings

AGGREGATORS = ("abmil", "clam-sb", "mean")


class Aggregator(nn.Module):
    """One bag of tile features (N, D) to slide logits (C,), attention over the tiles (N,), and an extra loss."""

    def __init__(self, kind: str, feature_dim: int, num_classes: int, settings: MILSettings) -> None:
        super().__init__()
        if kind not in AGGREGATORS:
            raise ValueError(f"unknown aggregator '{kind}'")
        self.kind = kind
        self.num_classes = num_classes
        self.settings = settings
        if kind == "mean":
            self.project = nn.Identity()
            self.head = nn.Linear(feature_dim, num_classes)
            return
        self.project = nn.Sequential(nn.Linear(feature_dim, settings.hidden), nn.ReLU(), nn.Dropout(settings.dropout))
        self.attend_tanh = nn.Sequential(nn.Linear(settings.hidden, settings.attention), nn.Tanh(),
                                         nn.Dropout(settings.dropout))
        self.attend_gate = nn.Sequential(nn.Linear(settings.hidden, settings.attention), nn.Sigmoid(),
                                         nn.Dropout(settings.dropout))
        self.attend_score = nn.Linear(settings.attention, 1)
        self.head = nn.Linear(settings.hidden, num_classes)
        if kind == "clam-sb":
            self.instance = nn.ModuleList([nn.Linear(settings.hidden, 2) for _ in range(num_classes)])

    def attention_logits(self, projected: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention (N,) of projected features (N, hidden)."""
        return self.attend_score(self.attend_tanh(projected) * self.attend_gate(projected)).squeeze(-1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slide logits (C,) and attention weights (N,) summing to 1, for tile features (N, D)."""
        logits, attention, _ = self.forward_with_projection(features)
        return logits, attention

    def forward_with_projection(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``forward``, plus the projected features (N, hidden) the instance loss reads."""
        projected = self.project(features)
        if self.kind == "mean":
            weights = torch.full(features.shape[:1], 1.0 / max(1, features.shape[0]), device=features.device)
            return self.head(projected.mean(dim=0)), weights, projected
        weights = torch.softmax(self.attention_logits(projected), dim=0)
        return self.head(weights @ projected), weights, projected

    def loss(self, features: torch.Tensor, label: int, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of one bag: weighted cross-entropy, plus CLAM-SB's instance loss."""
        logits, weights, projected = self.forward_with_projection(features)
        target = torch.tensor([label], device=logits.device)
        slide = F.cross_entropy(logits.float().unsqueeze(0), target, weight=class_weights)
        if self.kind != "clam-sb":
            return slide
        instance = self._instance_loss(weights, projected, label)
        w = self.settings.bag_weight
        return w * slide + (1 - w) * instance

    def _instance_loss(self, weights: torch.Tensor, projected: torch.Tensor, label: int) -> torch.Tensor:
        k = min(self.settings.k_sample, max(1, projected.shape[0] // 2))
        top = torch.topk(weights, k).indices
        bottom = torch.topk(-weights, k).indices
        losses = []
        for c, classifier in enumerate(self.instance):
            if c == label:
                index = torch.cat([top, bottom])
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(projected.device)
            elif self.num_classes > 2:  # CLAM's "subtyping": another class's top tiles are not this class
                index, target = top, torch.zeros(k, dtype=torch.long, device=projected.device)
            else:
                continue
            losses.append(F.cross_entropy(classifier(projected[index]).float(), target))
        total = torch.stack(losses).sum()
        return total / self.num_classes if self.num_classes > 2 else total

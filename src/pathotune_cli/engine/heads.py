"""Heads fitted without a gradient step: SimpleShot prototypes, cosine kNN, and a zero-shot text classifier.

Each reads the same pooled feature a linear head reads and returns logits, so ``predict``, ``eval``, the trust
section and every export treat them like any other head. Their state is buffers (stored in the prompt file,
never trained): ``fit`` fills them from one pass of training features.

- ``PrototypeHead`` (SimpleShot, Wang et al. 2019, "CL2N"): features L2-normalised, centred by the training mean,
  normalised again; one prototype per class, the mean of its tiles; logits ``-scale * squared distance``.
- ``KNNHead``: the training features, L2-normalised, with their labels; the k most cosine-similar vote with
  weight ``exp(similarity / temperature)`` (DINO's weighted kNN); logits are the log of the vote shares.
- ``ZeroShotHead`` (CLIP): the pooled feature through the backbone's own image projection, normalised, against
  the stored unit-norm text embedding of each class description, times the model's logit scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PROTOTYPE_SCALE = 10.0
"""Logits are ``-10 x`` the squared distance between unit vectors (ours; the trust section's temperature then
calibrates them)."""
VOTE_FLOOR = 1e-6
"""Vote share given to classes no neighbour voted for, so the logits stay finite."""


class FittedHead(nn.Module):
    """A head whose state is buffers filled by ``fit``; ``in_features`` and ``out_features`` as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the buffers from training features (N, in_features) and class indices (N,)."""
        raise NotImplementedError

    def resize_like(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Re-shape buffers whose size depends on the training set to the stored ones (before loading them)."""


class PrototypeHead(FittedHead):
    """SimpleShot: nearest class mean of centred, L2-normalised features."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("centre", torch.zeros(in_features))
        self.register_buffer("prototypes", torch.zeros(out_features, in_features))

    def _cl2n(self, features: torch.Tensor) -> torch.Tensor:
        z = F.normalize(features, dim=-1)
        return F.normalize(z - self.centre.to(z.dtype), dim=-1)

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The training mean of the normalised features, then each class's mean of the centred ones."""
        self.centre.copy_(F.normalize(features.float(), dim=-1).mean(0))
        z = self._cl2n(features.float())
        for c in range(self.out_features):
            members = z[labels == c]
            if len(members):
                self.prototypes[c] = members.mean(0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, C): ``-scale * |z - p_c|^2`` (up to a constant per image)."""
        z = self._cl2n(features)
        protos = self.prototypes.to(z.dtype)
        return PROTOTYPE_SCALE * (2 * z @ protos.t() - (protos * protos).sum(-1))


class KNNHead(FittedHead):
    """Cosine k-nearest neighbours over the stored training features."""

    def __init__(self, in_features: int, out_features: int, k: int, temperature: float) -> None:
        super().__init__(in_features, out_features)
        self.k = k
        self.temperature = temperature
        self.register_buffer("bank", torch.zeros(0, in_features))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Store every training feature (normalised) and its label."""
        self.bank = F.normalize(features.float(), dim=-1).to(self.bank.device)
        self.bank_labels = labels.long().to(self.bank.device)

    def resize_like(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """The stored bank's size is its training set's."""
        bank = tensors.get(f"{prefix}bank")
        if bank is not None and bank.dim() == 2:
            self.bank = torch.zeros_like(bank, dtype=torch.float32)
            self.bank_labels = torch.zeros(bank.shape[0], dtype=torch.long)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, C): log of each class's share of the k nearest neighbours' weighted votes."""
        z = F.normalize(features, dim=-1)
        sims = z @ self.bank.to(z.dtype).t()
        top, index = sims.topk(min(self.k, self.bank.shape[0]), dim=-1)
        weights = torch.exp((top - top[:, :1]) / self.temperature)
        classes = torch.arange(self.out_features, device=z.device)
        onehot = (self.bank_labels[index].unsqueeze(-1) == classes).to(weights.dtype)
        votes = (weights.unsqueeze(-1) * onehot).sum(1)
        return torch.log(votes / votes.sum(-1, keepdim=True) + VOTE_FLOOR)


class ZeroShotHead(FittedHead):
    """CLIP zero-shot: cosine similarity of the projected image embedding and each class's text embedding."""

    def __init__(self, in_features: int, projection: torch.Tensor, text: torch.Tensor, scale: float) -> None:
        super().__init__(in_features, int(text.shape[0]))
        self.register_buffer("projection", projection.detach().float().clone())
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1).clone())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Nothing to fit: the classifier is the class descriptions' text."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, C): ``scale * cos(image embedding, class text)``."""
        image = F.normalize(features @ self.projection.to(features.dtype), dim=-1)
        return self.scale.to(image.dtype) * image @ self.text.to(image.dtype).t()

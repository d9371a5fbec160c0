"""Logits and pre-logit features of tiles in one pass: what calibration, conformal sets and OOD scores read.

The features are ``PromptedModel.features`` (the pooled, normed tokens the head reads) and the logits are the
head applied to them, so one forward gives both. Tiles are taken as stored, never augmented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pathotune_cli.hardware import Placement
from pathotune_cli.training.images import to_float


@dataclass(frozen=True)
class Outputs:
    """Logits (N, C) and, where asked for, features (N, d), as float32 on the CPU."""

    logits: np.ndarray
    features: np.ndarray | None


def forward_with_features(model: Any, images: torch.Tensor, instance: torch.Tensor | None = None,
                          with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, features or None) of one batch of RGB floats in [0, 1], in float32."""
    feats = model.features(images, instance)
    logits = model.head(feats)
    return logits.float(), (feats.float() if with_features else None)


def model_outputs(
    model: Any, store: Any, batch_size: int, placement: Placement, instance: torch.Tensor | None = None,
    with_features: bool = True,
) -> Outputs:
    """Logits and features of every tile in ``store`` (an ``ImageStore``), in eval mode, without gradients."""
    model.eval()
    logits, feats = [], []
    with torch.no_grad():
        for start in range(0, len(store), batch_size):
            idx = np.arange(start, min(start + batch_size, len(store)))
            images = to_float(store.batch(idx)).to(placement.device)
            cached = instance[idx].to(placement.device) if instance is not None else None
            with placement.autocast():
                z, f = forward_with_features(model, images, cached, with_features)
            logits.append(z.cpu())
            if f is not None:
                feats.append(f.cpu())
    width = model.head.out_features
    z_all = torch.cat(logits).numpy() if logits else np.zeros((0, width), np.float32)
    f_all = (torch.cat(feats).numpy() if feats else np.zeros((0, model.head.in_features), np.float32)) \
        if with_features else None
    return Outputs(z_all, f_all)

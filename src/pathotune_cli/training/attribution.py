"""Attribution maps: which pixels of a tile drove its top class, by gradient x input on the prompted model.

For a tile ``x`` (RGB in [0, 1], at the size it was read: the model resizes and normalises it itself) and a
target class ``c`` (the top class unless given), with logits ``z(x)`` and temperature ``T``:

- ``g = d log softmax(z(x) / T)_c / dx``: how the class's (calibrated) log-probability moves with each pixel
  value. The log-probability, not the logit, so that evidence shared by every class cancels;
- ``A_ij = |sum_channels x_ij * g_ij|`` (gradient x input, Shrikumar et al. 2016; Simonyan et al. 2014 for the
  gradient): the first-order contribution of pixel ``(i, j)`` relative to a black image, in either direction;
- normalised to a non-negative map that sums to 1 over the tile's pixels (uniform when every gradient is 0), so
  maps of different tiles and models share one scale: ``A_ij * H * W`` is how many times the average pixel's
  share that pixel holds.

Gradients flow through every trained and frozen part: prompts, the backbone, the head and, for ``pathotune``,
the instance encoder's branch (recomputed here with gradients, not taken from a cache).

What it does not promise: gradient x input is a local, first-order reading. It is noisy at the pixel level,
depends on the black-image reference (dark nuclei and white glass contribute differently for that reason
alone), and says where the model's output is sensitive, not why, nor that the model is right. Compare maps of
several tiles of a class before reading anything into one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def gradient_x_input(
    model: Any, images: torch.Tensor, target: torch.Tensor | None = None, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attribution maps of a batch, and the logits and pre-logit features of the same forward pass.

    Args:
        model: A ``PromptedModel`` in eval mode (its parameters need not require gradients).
        images: (B, 3, H, W) RGB floats in [0, 1], on the model's device.
        target: (B,) class per tile; None takes each tile's top class.
        temperature: Divides the logits before the log-softmax: the gradient is
            ``(grad z_c - sum_k p_k grad z_k) / T`` with the calibrated ``p``, so competing classes weigh as the
            calibrated probabilities say (the ``1/T`` factor itself is removed by the normalisation).

    Returns:
        ``(maps, logits, features)``: maps (B, H, W) float64, non-negative, each summing to 1; logits (B, C)
        and features (B, d) float32.
    """
    model.eval()
    x = images.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        instance = None
        if model.needs_instance_features:
            instance = model.encode_instances(model.stain_normalise(x))
        features = model.features(x, instance)
        logits = model.head(features).float()
        chosen = logits.argmax(dim=1) if target is None else target.to(logits.device).long()
        log_p = torch.log_softmax(logits / float(temperature), dim=1)
        picked = log_p.gather(1, chosen[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, x)
    raw = (grad * x).sum(dim=1).abs().detach().double().cpu().numpy()
    return normalise_map(raw), logits.detach().cpu().numpy(), features.detach().float().cpu().numpy()


def normalise_map(raw: np.ndarray) -> np.ndarray:
    """Each (H, W) map of (B, H, W) scaled to sum 1; a map of zeros (or not finite) becomes uniform."""
    maps = np.where(np.isfinite(raw), np.abs(raw), 0.0).astype(np.float64)
    totals = maps.sum(axis=(1, 2), keepdims=True)
    uniform = np.full_like(maps, 1.0 / (maps.shape[1] * maps.shape[2]))
    return np.where(totals > 0, maps / np.where(totals > 0, totals, 1.0), uniform)


def slide_gradient_x_input(
    model: Any, features: torch.Tensor, tiles: torch.Tensor, index: np.ndarray, target: int | None = None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Attribution maps over some tiles of a slide for the *slide's* class, and the slide's logits.

    The same reading as ``gradient_x_input``, with ``z`` the slide-level model's logits: the tiles at ``index``
    are encoded again with gradients and put in place of their features, every other tile's features stay as
    computed (constants), and ``g = d log softmax(z / T)_c / dx`` over those tiles' pixels. So a map shows which
    pixels of an attended tile moved the slide's probability, through the aggregator's attention and its
    classifier alike.

    Args:
        model: A ``SlideModel`` in eval mode.
        features: (N, d) features of every tile of the slide (as aggregated), on the model's device.
        tiles: (K, 3, H, W) RGB floats in [0, 1] of the tiles at ``index``.
        index: (K,) positions of those tiles among the N.
        target: The slide class to explain; None takes the top class.
        temperature: As in ``gradient_x_input``.

    Returns:
        ``(maps, logits)``: maps (K, H, W) float64, each summing to 1; the slide's logits (C,) float32.
    """
    model.eval()
    x = tiles.detach().float().clone().requires_grad_(True)
    positions = torch.as_tensor(np.asarray(index, np.int64), device=features.device)
    with torch.enable_grad():
        encoded = model.tile_features(x).to(features.dtype)
        bag = features.detach().index_copy(0, positions, encoded)
        logits, _ = model(bag)
        logits = logits.float().reshape(-1)
        chosen = int(logits.argmax()) if target is None else int(target)
        picked = torch.log_softmax(logits / float(temperature), dim=0)[chosen]
        (grad,) = torch.autograd.grad(picked, x)
    raw = (grad * x).sum(dim=1).abs().detach().double().cpu().numpy()
    return normalise_map(raw), logits.detach().cpu().numpy()

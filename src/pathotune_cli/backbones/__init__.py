"""Frozen backbones behind one adapter interface, and where their weights come from.

Families are a literal table from name to ``module:Class``, resolved lazily so nothing heavy loads early.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from pathotune_cli.backbones.weights import WeightSource, fetch_command, resolve_weights
from pathotune_cli.config.schema import BackbonePreset

if TYPE_CHECKING:  # torch loads with the first backbone, not with this module
    from pathotune_cli.backbones.base import Backbone

FAMILIES: dict[str, str] = {
    "timm_vit": "pathotune_cli.backbones.timm_vit:TimmViT",
    "open_clip": "pathotune_cli.backbones.open_clip_tower:OpenClipTower",
    "pathoduet": "pathotune_cli.backbones.pathoduet:PathoDuet",
    "conch": "pathotune_cli.backbones.conch:Conch",
}

__all__ = ["FAMILIES", "WeightSource", "adapter_class", "fetch_command", "load_backbone", "resolve_weights"]


def adapter_class(preset: BackbonePreset) -> type[Backbone]:  # torch loads here, on first use
    """The adapter class of a preset's family, imported on first use."""
    module_name, _, class_name = FAMILIES[preset.family].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_backbone(
    preset: BackbonePreset, weights: str | Path | None = None, allow_download: bool = False
) -> Backbone:
    """Build a frozen backbone: resolve its weights, load them strictly, freeze and set eval mode."""
    source = resolve_weights(preset, weights, allow_download)
    cls = adapter_class(preset)
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)  # random presets are the same model on every machine
        backbone = cls(preset, source)
    backbone.weight_source = source
    backbone.requires_grad_(False)
    return backbone.eval()

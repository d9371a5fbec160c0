"""A slide-level model: a tile encoder (a ``PromptedModel`` whose tile head is unused) and a MIL aggregator.

The tile encoder makes one feature per tile: the bare backbone (``linear``), the prompts of a tile-level file
tuned on the lab's tiles (two-stage), or prompts trained with the aggregator from slide labels (end to end).
The prompt file holds the encoder's own tensors as ``tiles.*`` and the aggregator's as ``mil.*``, with the same
refusal rules as a tile-level file: another backbone's weights are refused by fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathotune_cli.config.run import MILSettings
from pathotune_cli.engine.header import PromptHeader
from pathotune_cli.engine.load import load_frozen_parts, stored_text_embeddings
from pathotune_cli.engine.mil import Aggregator
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.promptfile import ALTERED, PromptFile, check_tensors, read_prompt_file
from pathotune_cli.errors import BadInput
from pathotune_cli.hardware import Placement

FROZEN_PREFIXES = ("backbone.", "instance_encoder.", "head.")
"""Parts of the tile encoder a slide-level file never stores: the frozen models, and the unused tile head."""


class SlideModel(nn.Module):
    """Tile encoder + aggregator. ``tile_features`` runs on tile images, ``forward`` on one bag of features."""

    def __init__(self, tiles: PromptedModel, aggregator: Aggregator) -> None:
        super().__init__()
        self.tiles = tiles
        self.aggregator = aggregator
        tiles.head.requires_grad_(False)  # slides are classified by the aggregator's head

    @property
    def feature_dim(self) -> int:
        """Width of one tile's feature."""
        return self.tiles.backbone.pooled_dim(self.tiles.pool_mode)

    def place(self, placement: Placement, pass_: str = "inference", pinned: Any = None) -> SlideModel:
        """Move to the placement's device, with each frozen part's kernels for it and ``pass_``."""
        self.tiles.place(placement, pass_, pinned)
        self.aggregator.to(placement.device)
        return self

    def train(self, mode: bool = True) -> SlideModel:
        """Train mode for the prompts and the aggregator; the frozen parts stay in eval mode."""
        super().train(mode)
        self.tiles.train(mode)
        return self

    def tile_features(self, images: torch.Tensor, instance_features: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, D) of tile images (B, 3, H, W) in [0, 1]."""
        return self.tiles.features(images, instance_features)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slide logits (C,) and attention (N,) for one bag of tile features (N, D)."""
        return self.aggregator(features)

    def tile_tensors(self) -> dict[str, torch.Tensor]:
        """The tile encoder's own tensors (prompts, refine module, text embeddings): none for ``linear``."""
        state = {n: p.detach() for n, p in self.tiles.named_parameters() if not n.startswith(FROZEN_PREFIXES)}
        if self.tiles.ttp is not None:
            state["ttp.text_embeddings"] = self.tiles.ttp.text_embeddings.detach()
        return state

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What a slide-level prompt file stores."""
        state = {f"tiles.{k}": v for k, v in self.tile_tensors().items()}
        state.update({f"mil.{k}": v.detach() for k, v in self.aggregator.state_dict().items()})
        return state

    def load_trained(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load a slide-level file's tensors (names as ``trained_state``)."""
        tiles = {k.removeprefix("tiles."): v for k, v in tensors.items() if k.startswith("tiles.")}
        self.tiles.load_state_dict(tiles, strict=False)
        self.aggregator.load_state_dict({k.removeprefix("mil."): v for k, v in tensors.items() if k.startswith("mil.")})

    def trainable_parameters(self) -> int:
        """Parameters that train."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def make_slide_model(tiles: PromptedModel, num_classes: int, settings: MILSettings, kind: str) -> SlideModel:
    """A fresh aggregator of ``kind`` over the features of ``tiles``."""
    feature_dim = tiles.backbone.pooled_dim(tiles.pool_mode)
    return SlideModel(tiles, Aggregator(kind, feature_dim, num_classes, settings))


def load_slide_model(
    path: str | Path, weights: str | Path | None = None, allow_download: bool = False
) -> tuple[SlideModel, PromptFile]:
    """Read a slide-level prompt file and rebuild its model in eval mode.

    Raises:
        BadInput: a tile-level file, a damaged file, or weights of another backbone.
    """
    file = read_prompt_file(path)
    header = file.header
    if header.mil is None:  # the header validates: only a slide-level file has mil settings
        raise BadInput(
            f"{file.path} is a tile-level prompt file (task {header.task.name})",
            "use it on tiles or slides with `pathotune predict`, or train a slide-level file on a slide-level task",
        )
    model = _skeleton(file, header, weights, allow_download)
    expected = model.trained_state()
    check_tensors(file, expected)
    model.load_trained(file.tensors)
    model.requires_grad_(False)
    return model.eval(), file


def _skeleton(file: PromptFile, header: PromptHeader, weights: Any, allow_download: bool) -> SlideModel:
    backbone, instance = load_frozen_parts(file, weights, allow_download)
    embeddings = stored_text_embeddings(file, prefix="tiles.")
    tiles = PromptedModel(backbone, header.prompt, 1, embeddings, instance)
    if header.mil is None or header.mil.aggregator is None:
        raise BadInput(f"{file.path}: its aggregator is not named", ALTERED)
    return make_slide_model(tiles, len(header.classes), header.mil, header.mil.aggregator)

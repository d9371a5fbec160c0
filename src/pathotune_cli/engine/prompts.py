"""The three kinds of prompt tokens of PathoTune: task visual (TVP), task textual (TTP), instance visual (IVP).

Every count and shape here is a setting with our default (``config/run.py``); the paper gives none.
"""

from __future__ import annotations

import torch
from torch import nn

from pathotune_cli.config.run import IVPSettings, TTPSettings, TVPSettings


class TaskVisualPrompts(nn.Module):
    """N learnable tokens of the backbone's width (VPT). Prompts get no position embedding.

    Shallow: one set enters at the first block. Deep: a fresh set replaces the previous block's tokens at
    every block, or only at the last ``depth`` blocks (the first block's set is always present).
    """

    def __init__(self, settings: TVPSettings, width: int, num_blocks: int) -> None:
        super().__init__()
        self.num_tokens = settings.tokens
        if settings.deep:
            depth = min(settings.depth or num_blocks, num_blocks)
            replace = list(range(num_blocks - depth, num_blocks))
        else:
            replace = [0]
        if 0 not in replace:
            replace = [0, *replace]
        self.replace_at = replace
        self.slot = {block: i for i, block in enumerate(replace)}
        self.tokens = nn.Parameter(torch.randn(len(replace), settings.tokens, width) * settings.init_std)

    def at_block(self, block: int) -> torch.Tensor | None:
        """The (N, width) tokens that enter ``block``, or None where the previous block's stay."""
        slot = self.slot.get(block)
        return None if slot is None else self.tokens[slot]


class TaskTextPrompts(nn.Module):
    """The task's texts, encoded once by a frozen text encoder and stored; a trainable projection to tokens."""

    def __init__(self, settings: TTPSettings, text_embeddings: torch.Tensor, width: int) -> None:
        super().__init__()
        num_texts, text_dim = text_embeddings.shape
        self.register_buffer("text_embeddings", text_embeddings.float().clone())
        self.proj = nn.Sequential(nn.Linear(text_dim, settings.hidden), nn.GELU(), nn.Linear(settings.hidden, width))
        self.mix = None if settings.tokens in (None, num_texts) else nn.Linear(num_texts, settings.tokens)
        self.num_tokens = settings.tokens or num_texts
        nn.init.normal_(self.proj[-1].weight, std=0.02)
        nn.init.zeros_(self.proj[-1].bias)

    def forward(self) -> torch.Tensor:
        """(M, width) tokens, the same for every image of the task."""
        tokens = self.proj(self.text_embeddings)
        if self.mix is not None:
            tokens = self.mix(tokens.transpose(0, 1)).transpose(0, 1)
        return tokens


class VisualRefineModule(nn.Module):
    """Instance features from a frozen encoder, refined into K tokens of the backbone's width."""

    def __init__(self, settings: IVPSettings, feature_dim: int, width: int) -> None:
        super().__init__()
        self.num_tokens = settings.tokens
        self.width = width
        self.net = nn.Sequential(
            nn.LayerNorm(feature_dim),
            nn.Linear(feature_dim, settings.hidden),
            nn.GELU(),
            nn.Linear(settings.hidden, settings.tokens * width),
        )
        nn.init.normal_(self.net[-1].weight, std=0.02)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) instance features to (B, K, width) tokens."""
        return self.net(features).view(features.shape[0], self.num_tokens, self.width)

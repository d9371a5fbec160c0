"""The prompted model: a frozen backbone with prompt tokens inserted and a linear head.

Token order into the first block: ``[prefix (CLS, registers) | TVP | TTP | IVP | patch tokens]``.
Methods are the same engine with parts switched off, so comparisons between them are fair; within ``pathotune``,
``prompt.ttp.tokens=0`` or ``prompt.ivp.tokens=0`` switches TTP or IVP off (ours, for the paper's ablations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pathotune_cli.backbones.base import Backbone
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine.prompts import TaskTextPrompts, TaskVisualPrompts, VisualRefineModule
from pathotune_cli.hardware import Placement

if TYPE_CHECKING:
    from pathotune_cli.config.run import KernelSpec


class PromptedModel(nn.Module):
    """Frozen backbone + prompts + head. ``forward`` takes RGB floats in [0, 1] and returns logits."""

    def __init__(
        self,
        backbone: Backbone,
        settings: PromptSettings,
        num_classes: int,
        text_embeddings: torch.Tensor | None = None,
        instance_encoder: Backbone | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.method = settings.method
        self.instance_images_encoded = 0
        """How many images the instance encoder has seen: lets tests prove the cache works."""
        self.backbone = backbone
        self.pool_mode = settings.pool or backbone.preset.pool
        uses_prompts = self.method in ("vpt", "pathotune")
        self.tvp = (
            TaskVisualPrompts(settings.tvp, backbone.width, backbone.num_blocks)
            if uses_prompts and settings.tvp.tokens > 0
            else None
        )
        self.ttp = None
        self.vrm = None
        self.instance_encoder = None
        if settings.uses_ttp:
            if text_embeddings is None:
                raise ValueError("method 'pathotune' needs the task's text embeddings (or prompt.ttp.tokens=0)")
            self.ttp = TaskTextPrompts(settings.ttp, text_embeddings, backbone.width)
        if settings.uses_ivp:
            self.instance_encoder = instance_encoder
            encoder = instance_encoder if instance_encoder is not None else backbone
            self.vrm = VisualRefineModule(settings.ivp, encoder.feature_dim, backbone.width)
        self.stain: nn.Module | None = None
        """Stain normalisation applied to the input first (``engine.stain``; set by ``tune --stain`` and loading)."""
        feature_dim = backbone.pooled_dim(self.pool_mode)
        self.head = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.head.bias)
        self._freeze()

    # -- parameters --------------------------------------------------------------------------------------------
    def _freeze(self) -> None:
        train_backbone = self.method == "full"
        self.backbone.requires_grad_(train_backbone)
        if self.instance_encoder is not None:
            self.instance_encoder.requires_grad_(False)

    def place(self, placement: Placement, pass_: str = "inference", pinned: KernelSpec | None = None) -> PromptedModel:
        """Move to the placement's device, each frozen part with the kernels measured fastest for ``pass_``.

        ``pass_`` is ``inference`` or ``training`` (``backbones.kernels``); ``pinned`` overrides the measurement.
        """
        self.to(placement.device)
        for part in (self.backbone, self.instance_encoder):
            if part is not None:
                part.place(placement, pass_, pinned)
        return self

    def kernel_choices(self) -> dict[str, str]:
        """The kernels each frozen part runs with since ``place`` (for run records and benchmarks)."""
        parts = {"backbone": self.backbone, "instance_encoder": self.instance_encoder}
        return {name: part.kernels.describe() for name, part in parts.items()
                if part is not None and getattr(part, "kernels", None) is not None}

    def train(self, mode: bool = True) -> PromptedModel:
        """Train mode for the prompts and head; frozen modules stay in eval mode (no dropout, fixed norms)."""
        super().train(mode)
        if self.method != "full":
            self.backbone.eval()
        if self.instance_encoder is not None:
            self.instance_encoder.eval()
        return self

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors a prompt file stores: every trainable parameter, plus the task's text embeddings."""
        state = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        if self.ttp is not None:
            state["ttp.text_embeddings"] = self.ttp.text_embeddings.detach()
        if self.stain is not None:
            state.update({f"stain.{name}": t for name, t in self.stain.reference().items()})  # type: ignore[operator]
        return state

    def load_trained(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors named as ``trained_state`` (the frozen parts are left as they are)."""
        self.load_state_dict(tensors, strict=False)

    def trainable_parameters(self) -> int:
        """Number of parameters that train."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def backbone_parameters(self) -> int:
        """Number of parameters of the backbone."""
        return sum(p.numel() for p in self.backbone.parameters())

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens between the prefix and the patch tokens."""
        n = self.tvp.num_tokens if self.tvp is not None else 0
        n += self.ttp.num_tokens if self.ttp is not None else 0
        n += self.vrm.num_tokens if self.vrm is not None else 0
        return n

    # -- forward -----------------------------------------------------------------------------------------------
    @property
    def needs_instance_features(self) -> bool:
        """Whether ``forward`` uses instance features (and so can take cached ones)."""
        return self.vrm is not None

    def stain_normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The images as the model sees them: stain-normalised when the prompt file says so, else unchanged."""
        return self.stain(images) if self.stain is not None else images

    def instance_features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of each image from the frozen instance encoder (the backbone itself for ``self``)."""
        self.instance_images_encoded += int(images.shape[0])
        with torch.no_grad():
            return self.encode_instances(self.stain_normalise(images))

    def encode_instances(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen instance encoder on images already stain-normalised (no counting: traceable)."""
        encoder = self.instance_encoder if self.instance_encoder is not None else self.backbone
        return encoder(images)

    def features(self, images: torch.Tensor, instance_features: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features of prompted images: what the head reads (stain normalisation first, where set)."""
        bb = self.backbone
        if self.stain is not None:
            images = self.stain(images)
            if self.vrm is not None and instance_features is None:
                self.instance_images_encoded += int(images.shape[0])
                with torch.no_grad():
                    instance_features = self.encode_instances(images)
        tokens = bb.embed(bb.normalise(images))
        batch = tokens.shape[0]
        p = bb.num_prefix_tokens
        segments = [tokens[:, :p]]
        if self.tvp is not None:
            segments.append(self.tvp.at_block(0).to(tokens.dtype).expand(batch, -1, -1))
        if self.ttp is not None:
            segments.append(self.ttp().to(tokens.dtype).expand(batch, -1, -1))
        if self.vrm is not None:
            if instance_features is None:
                instance_features = self.instance_features(images)
            segments.append(self.vrm(instance_features.to(self.head.weight.dtype)).to(tokens.dtype))
        segments.append(tokens[:, p:])
        tokens = torch.cat(segments, dim=1) if len(segments) > 2 else tokens
        n_tvp = self.tvp.num_tokens if self.tvp is not None else 0
        last = bb.num_blocks - 1
        for i in range(bb.num_blocks):
            if i > 0 and self.tvp is not None:
                fresh = self.tvp.at_block(i)
                if fresh is not None:
                    fresh = fresh.to(tokens.dtype).expand(batch, -1, -1)
                    tokens = torch.cat([tokens[:, :p], fresh, tokens[:, p + n_tvp :]], dim=1)
            if i == last:
                break
            tokens = bb.block(i, tokens)
        tokens = bb.blocks_then_norm(tokens, self.pool_mode, first=last)
        return bb.pool(tokens, skip=self.num_prompt_tokens, pool=self.pool_mode)

    @property
    def feature_dim(self) -> int:
        """Width of ``features``: what the head (or a slide-level aggregator) reads per tile."""
        return self.backbone.pooled_dim(self.pool_mode)

    def tile_features(self, images: torch.Tensor, instance_features: torch.Tensor | None = None) -> torch.Tensor:
        """``features``, under the name slide-level code uses for every tile encoder."""
        return self.features(images, instance_features)

    def forward(self, images: torch.Tensor, instance_features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, classes) for RGB images in [0, 1] of shape (B, 3, H, W)."""
        return self.head(self.features(images, instance_features))

"""The prompted model: a frozen backbone with prompt tokens inserted and a linear head.

Token order into the first block: ``[prefix (CLS, registers) | TVP | TTP | IVP | patch tokens]``.
Methods are the same engine with parts switched off, so comparisons between them are fair; within ``pathotune``,
``prompt.ttp.tokens=0`` or ``prompt.ivp.tokens=0`` switches TTP or IVP off (ours, for the paper's ablations).
``lora`` adds low-rank adapters to the frozen backbone (``engine.lora``; ``lora.rank`` adds them to vpt and
pathotune too); ``prototypes``, ``knn`` and ``zeroshot`` replace the linear head by one fitted without gradients
(``engine.heads``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from pathotune_cli.backbones.base import Backbone
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine.heads import FittedHead, KNNHead, PrototypeHead, ZeroShotHead
from pathotune_cli.engine.lora import LoRAAdapters
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
        class_text: torch.Tensor | None = None,
    ) -> None:
        """``class_text``: ``zeroshot`` only, one unit-norm embedding per class from the backbone's text tower."""
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
        self.lora = LoRAAdapters(backbone, settings.lora, settings.lora_rank) if settings.lora_rank else None
        if self.lora is not None and not len(self.lora):
            raise ValueError(f"backbone '{backbone.preset.name}' has no {'/'.join(settings.lora.targets)} linear "
                             "layers in timm-style blocks for LoRA (open_clip towers use nn.MultiheadAttention)")
        self.stain: nn.Module | None = None
        """Stain normalisation applied to the input first (``engine.stain``; set by ``tune --stain`` and loading)."""
        self.head = _head(backbone, settings, backbone.pooled_dim(self.pool_mode), num_classes, class_text)
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
        """The tensors a prompt file stores.

        Every trainable parameter, the task's text embeddings, and a fitted head's buffers (prototypes, the kNN
        bank, the zero-shot classifier).
        """
        state = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        if self.ttp is not None:
            state["ttp.text_embeddings"] = self.ttp.text_embeddings.detach()
        if isinstance(self.head, FittedHead):
            state.update({f"head.{name}": b.detach() for name, b in self.head.named_buffers()})
        if self.stain is not None:
            state.update({f"stain.{name}": t for name, t in self.stain.reference().items()})  # type: ignore[operator]
        return state

    def resize_for(self, tensors: dict[str, torch.Tensor]) -> None:
        """Before ``load_trained``: give a fitted head the stored sizes of its buffers (the kNN bank)."""
        if isinstance(self.head, FittedHead):
            self.head.resize_like(tensors, "head.")

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
            segments.append(self.vrm(instance_features.to(self.vrm.net[1].weight.dtype)).to(tokens.dtype))
        segments.append(tokens[:, p:])
        tokens = torch.cat(segments, dim=1) if len(segments) > 2 else tokens
        n_tvp = self.tvp.num_tokens if self.tvp is not None else 0
        last = bb.num_blocks - 1
        with self.lora.switched_on() if self.lora is not None else contextlib.nullcontext():
            for i in range(bb.num_blocks):
                if i > 0 and self.tvp is not None:
                    fresh = self.tvp.at_block(i)
                    if fresh is not None:
                        fresh = fresh.to(tokens.dtype).expand(batch, -1, -1)
                        tokens = torch.cat([tokens[:, :p], fresh, tokens[:, p + n_tvp :]], dim=1)
                if i == last:
                    break
                tokens = bb.block(i, tokens)
            # the last block's class-token-only shortcut reads qkv's weights directly: adapted models run it whole
            tokens = bb.blocks_then_norm(tokens, self.pool_mode if self.lora is None else "whole", first=last)
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


def _head(backbone: Backbone, settings: PromptSettings, feature_dim: int, num_classes: int,
          class_text: torch.Tensor | None) -> nn.Module:
    """The method's head: linear (trained), or fitted without gradients (prototypes, knn, zeroshot)."""
    if settings.method == "prototypes":
        return PrototypeHead(feature_dim, num_classes)
    if settings.method == "knn":
        return KNNHead(feature_dim, num_classes, settings.knn.k, settings.knn.temperature)
    if settings.method == "zeroshot":
        projection = backbone.text_projection(feature_dim)
        if projection is None or class_text is None:
            raise ValueError(f"method 'zeroshot' needs a backbone with a text tower; '{backbone.preset.name}' has none")
        if class_text.shape != (num_classes, projection[0].shape[1]):
            raise ValueError(f"zero-shot class texts of shape {tuple(class_text.shape)} do not fit {num_classes} "
                             f"classes and {projection[0].shape[1]}-d embeddings")
        return ZeroShotHead(feature_dim, projection[0], class_text, projection[1])
    head = nn.Linear(feature_dim, num_classes)
    nn.init.zeros_(head.bias)
    return head

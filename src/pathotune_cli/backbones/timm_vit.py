"""timm ``VisionTransformer`` backbones: ImageNet ViTs, DINOv2, UNI, Virchow2 (registers), H-optimus, ..."""

from __future__ import annotations

import torch

from pathotune_cli.backbones.base import Backbone
from pathotune_cli.backbones.state_dict import load_strict, read_state_dict
from pathotune_cli.backbones.weights import WeightSource
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput


class TimmViT(Backbone):
    """Adapter over ``timm.models.vision_transformer.VisionTransformer``."""

    def __init__(self, preset: BackbonePreset, source: WeightSource) -> None:
        super().__init__(preset)
        self.vit = build_timm_vit(preset)
        if source.path is not None:
            state = read_state_dict(source.path)
            state = convert_timm_state(state, self.vit)
            load_strict(self.vit, state, str(source.path))
        check_matches_preset(self.vit, preset)
        self.width = self.vit.embed_dim
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.num_blocks = len(self.vit.blocks)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(images))
        return vit.norm_pre(vit.patch_drop(x))

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.blocks[index](tokens)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.norm(tokens)

    def avg_norm(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.vit.fc_norm(pooled)


def build_timm_vit(preset: BackbonePreset) -> torch.nn.Module:
    """The timm model for a preset, with random weights and no classifier head."""
    import timm

    kwargs = {
        "num_classes": 0,
        "img_size": preset.input_size,
        "global_pool": "avg" if preset.pool == "avg" else "token",
        **preset.model_kwargs,
    }
    try:
        model = timm.create_model(preset.model, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise BadInput(f"backbone preset '{preset.name}': timm cannot build '{preset.model}': {exc}", "fix the preset") from None
    if not hasattr(model, "blocks") or not hasattr(model, "_pos_embed"):
        raise BadInput(
            f"backbone preset '{preset.name}': '{preset.model}' is not a timm VisionTransformer",
            "use family open_clip or a ViT architecture",
        )
    return model


def convert_timm_state(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map foreign key layouts (DINOv2, open_clip trunks) and resample position embeddings, via timm."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, model)


def check_matches_preset(model: torch.nn.Module, preset: BackbonePreset) -> None:
    """The preset's stated shape must be the model's: a wrong width or token count is a preset bug."""
    patch = model.patch_embed.patch_size
    checks = {
        "width": (preset.width, model.embed_dim),
        "patch_size": (preset.patch_size, patch[0] if isinstance(patch, tuple) else patch),
        "num_prefix_tokens": (preset.num_prefix_tokens, model.num_prefix_tokens),
    }
    for key, (stated, actual) in checks.items():
        if stated != actual:
            raise BadInput(
                f"backbone preset '{preset.name}' says {key}={stated} but the model has {actual}",
                f"set {key}: {actual} in the preset",
            )

"""PathoDuet (Hua et al., MedIA 2024): a ViT-B/16 with one extra *pretext* prefix token and no input normalisation.

The published checkpoints (``checkpoint_HE.pth``, ``checkpoint_IHC.pth``) hold a MoCo v3 ``VisionTransformerMoCo``
trained with ``global_pool='avg'``: the final LayerNorm sits after the average (timm's ``fc_norm``), and the
feature is the mean of the patch tokens. The position embedding has two zero rows for ``[pretext, cls]``.
Here the pretext token occupies timm's single register slot (``reg_tokens=1``); the converter swaps the two
prefix position rows with it, so every token meets the same embedding as in the original model.
"""

from __future__ import annotations

import torch

from pathotune_cli.backbones.convert import drop_listed, pathoduet_to_timm
from pathotune_cli.backbones.timm_vit import TimmViT, build_timm_vit, convert_timm_state
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput


class PathoDuet(TimmViT):
    """A timm ViT whose second prefix token is PathoDuet's pretext token."""

    @classmethod
    def build_module(cls, preset: BackbonePreset) -> torch.nn.Module:
        if preset.num_prefix_tokens != 2:
            raise BadInput(
                f"backbone preset '{preset.name}': PathoDuet has 2 prefix tokens (CLS and pretext), "
                f"the preset says {preset.num_prefix_tokens}",
                "set num_prefix_tokens: 2",
            )
        return build_timm_vit(preset, extra={"reg_tokens": 1, "class_token": True, "no_embed_class": False})

    @classmethod
    def prepare_state(
        cls, state: dict[str, torch.Tensor], module: torch.nn.Module, preset: BackbonePreset, source: str
    ) -> dict[str, torch.Tensor]:
        if "pretext_token" not in state and "reg_token" not in state:
            raise BadInput(
                f"{source} has no pretext_token, so it is not a PathoDuet checkpoint",
                "use checkpoint_HE.pth or checkpoint_IHC.pth from the PathoDuet release",
            )
        state = pathoduet_to_timm(drop_listed(state, preset.drop_keys))
        return convert_timm_state(state, module)

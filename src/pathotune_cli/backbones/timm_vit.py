"""timm ``VisionTransformer`` backbones: ImageNet ViTs, DINOv2, UNI, UNI2-h and Virchow2 (registers, SwiGLU),
H-optimus-0, Prov-GigaPath, and Phikon / Phikon-v2 mapped from their HF transformers checkpoints.

Presets are data, so timm keyword arguments that are Python objects (an MLP class, an activation) are named
by strings and mapped here through one small table, with a clear error for an unknown name.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from pathotune_cli.backbones.base import Backbone, linear_parameters
from pathotune_cli.backbones.convert import drop_listed, hf_dinov2_to_timm, hf_vit_to_timm
from pathotune_cli.backbones.state_dict import load_strict, read_state_dict
from pathotune_cli.backbones.weights import WeightSource
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput

MLP_LAYERS = ("mlp", "swiglu_packed", "swiglu", "glu")
ACT_LAYERS = ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu")
OUR_KWARGS = ("norm_eps",)
"""``model_kwargs`` keys that are ours, not timm's: ``norm_eps`` sets the LayerNorm epsilon (HF ViT: 1e-12)."""


class TimmViT(Backbone):
    """Adapter over ``timm.models.vision_transformer.VisionTransformer``."""

    def __init__(self, preset: BackbonePreset, source: WeightSource) -> None:
        super().__init__(preset)
        self.vit = self.build_module(preset)
        if source.path is not None:
            state = self.prepare_state(read_state_dict(source.path), self.vit, preset, str(source.path))
            load_strict(self.vit, state, str(source.path), self.ignore_keys)
        check_matches_preset(self.vit, preset)
        self.width = self.vit.embed_dim
        self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.num_blocks = len(self.vit.blocks)

    @classmethod
    def build_module(cls, preset: BackbonePreset) -> torch.nn.Module:
        return build_timm_vit(preset)

    @classmethod
    def prepare_state(
        cls, state: dict[str, torch.Tensor], module: torch.nn.Module, preset: BackbonePreset, source: str
    ) -> dict[str, torch.Tensor]:
        state = drop_listed(state, preset.drop_keys)
        if preset.key_layout == "hf_vit":
            state = hf_vit_to_timm(state)
        elif preset.key_layout == "hf_dinov2":
            state = hf_dinov2_to_timm(state)
        return convert_timm_state(state, module)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(images))
        return vit.norm_pre(vit.patch_drop(x))

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.blocks[index](tokens)

    def block_head(self, index: int, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        block = self.vit.blocks[index]
        if not _plain_block(block):
            return block(tokens)[:, :rows]
        return head_rows_of_block(block, tokens, rows)

    def attention_choices(self) -> bool:
        return any(hasattr(getattr(block, "attn", None), "fused_attn") for block in self.vit.blocks)

    def set_attention(self, kind: str) -> None:
        """``plain`` (q @ k^T, softmax, @ v) or ``fused`` (timm's default, ``scaled_dot_product_attention``).

        Which is faster depends on the machine: in bf16 on an AMD Zen 4 plain runs a ViT-S forward 1.2-1.6x and its
        backward 2.8x faster, on an Intel Xeon with AMX fused runs the forward 1.7-2.4x faster; so
        ``backbones.kernels`` measures.
        """
        plain = kind == "plain"
        for block in self.vit.blocks:
            attn = getattr(block, "attn", None)
            if attn is not None and hasattr(attn, "fused_attn"):
                if not hasattr(attn, "_fused_default"):
                    attn._fused_default = attn.fused_attn
                attn.fused_attn = False if plain else attn._fused_default

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vit.norm(tokens)

    def avg_norm(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.vit.fc_norm(pooled)


def _plain_block(block: torch.nn.Module) -> bool:
    """timm's own ``Block`` around its own ``Attention`` with a plain qkv projection: the modules
    ``head_rows_of_block`` re-states. Subclasses (rotary embeddings, parallel blocks, ...) run whole."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    attn = getattr(block, "attn", None)
    return (
        type(block) is Block
        and type(attn) is Attention
        and type(attn.qkv) is torch.nn.Linear
        and attn.qkv.out_features == 3 * attn.attn_dim
    )


def head_rows_of_block(block: torch.nn.Module, tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """timm ``Block.forward`` computed for the first ``rows`` tokens only: queries, attention output, MLP and
    residuals for those rows; keys and values from every token, as in the whole block.

    Equal to ``block(tokens)[:, :rows]`` up to float rounding (tests/backbones/test_block_head.py), with
    1/N of the query, projection and MLP work: the last block of a class-token model costs about a sixth
    of a whole one.
    """
    import torch.nn.functional as F

    attn = block.attn
    x = block.norm1(tokens)
    b, n, _ = x.shape
    heads, head_dim, dim = attn.num_heads, attn.head_dim, attn.attn_dim
    weight, bias = linear_parameters(attn.qkv, x)
    kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
    k, v = kv.reshape(b, n, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    head = x[:, :rows]
    q = F.linear(head, weight[:dim], None if bias is None else bias[:dim]).reshape(b, rows, heads, head_dim)
    q, k = attn.q_norm(q.transpose(1, 2)), attn.k_norm(k)
    if attn.fused_attn:
        dropout = attn.attn_drop.p if attn.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1)
        out = attn.attn_drop(scores.softmax(dim=-1)) @ v
    out = attn.norm(out.transpose(1, 2).reshape(b, rows, dim))
    if attn.gate is not None:
        out = out * attn.gate(head).sigmoid()
    out = attn.proj_drop(attn.proj(out))
    y = tokens[:, :rows] + block.drop_path1(block.ls1(out))
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))


def build_timm_vit(preset: BackbonePreset, extra: dict[str, Any] | None = None) -> torch.nn.Module:
    """The timm model for a preset, with random weights and no classifier head."""
    import timm

    kwargs = {
        "num_classes": 0,
        "img_size": preset.input_size,
        "global_pool": "avg" if preset.pool == "avg" else "token",
        **timm_kwargs(preset.model_kwargs, preset.name),
        **(extra or {}),
    }
    try:
        model = timm.create_model(preset.model, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise BadInput(
            f"backbone preset '{preset.name}': timm cannot build '{preset.model}': {exc}",
            "fix the preset",
        ) from None
    if not hasattr(model, "blocks") or not hasattr(model, "_pos_embed"):
        raise BadInput(
            f"backbone preset '{preset.name}': '{preset.model}' is not a timm VisionTransformer",
            "use family open_clip or a ViT architecture",
        )
    return model


def timm_kwargs(model_kwargs: dict[str, Any], name: str = "?") -> dict[str, Any]:
    """Preset ``model_kwargs`` with the string-named objects resolved (``mlp_layer``, ``act_layer``, ``norm_eps``).

    Raises:
        BadInput: an unknown MLP or activation name, naming the allowed ones.
    """
    from timm.layers import GluMlp, Mlp, SwiGLU, SwiGLUPacked

    kwargs = dict(model_kwargs)
    mlp = kwargs.get("mlp_layer")
    if mlp is not None:
        table = {"mlp": Mlp, "swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU, "glu": GluMlp}
        if not isinstance(mlp, str) or mlp not in table:
            raise BadInput(
                f"backbone preset '{name}': model_kwargs.mlp_layer {mlp!r} is not one of {', '.join(MLP_LAYERS)}",
                "swiglu_packed is the fused SwiGLU of UNI2-h, Virchow2, H-optimus-0 and Prov-GigaPath",
            )
        kwargs["mlp_layer"] = table[mlp]
    act = kwargs.get("act_layer")
    if act is not None:
        if not isinstance(act, str) or act not in ACT_LAYERS:
            raise BadInput(
                f"backbone preset '{name}': model_kwargs.act_layer {act!r} is not one of {', '.join(ACT_LAYERS)}",
                "silu goes with swiglu_packed",
            )
        kwargs["act_layer"] = _act_layer(act)
    eps = kwargs.pop("norm_eps", None)
    if eps is not None:
        if not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise BadInput(
                f"backbone preset '{name}': model_kwargs.norm_eps must be a small positive number",
                "e.g. 1e-6",
            )
        kwargs["norm_layer"] = partial(torch.nn.LayerNorm, eps=float(eps))
    return kwargs


def convert_timm_state(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map foreign key layouts (original DINOv2, open_clip trunks) and resample position embeddings, via timm."""
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
    if preset.family == "timm_vit":
        checks["num_register_tokens"] = (preset.num_register_tokens, getattr(model, "num_reg_tokens", 0))
    for key, (stated, actual) in checks.items():
        if stated != actual:
            raise BadInput(
                f"backbone preset '{preset.name}' says {key}={stated} but the model has {actual}",
                f"set {key}: {actual} in the preset",
            )


def _act_layer(name: str) -> type[torch.nn.Module] | partial:
    from torch import nn

    if name == "quick_gelu":
        from timm.layers import QuickGELU

        return QuickGELU
    return {"gelu": nn.GELU, "gelu_tanh": partial(nn.GELU, approximate="tanh"), "silu": nn.SiLU, "relu": nn.ReLU}[name]

"""Pure key converters from each published checkpoint layout to the module that runs it.

One function per layout, no model and no I/O: a dict of tensors in, a dict of tensors out. A key a converter
does not recognise is kept as it is, so the strict load that follows names it as unexpected; nothing is
dropped silently except heads and the training-only tensors a preset lists in ``drop_keys``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from pathotune_cli.errors import BadInput

_HF_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")

# HF transformers ViTModel (Phikon) block suffix -> timm block suffix; q/k/v are fused separately
_HF_VIT_BLOCK = {
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
}
# HF transformers Dinov2Model (Phikon-v2) block suffix -> timm block suffix
_HF_DINOV2_BLOCK = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
_HF_EMBED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# CONCH checkpoint parts that inference with the image encoder and the text encoder never runs
CONCH_UNUSED = ("visual.attn_pool_caption.", "visual.ln_caption.", "text_decoder.", "logit_scale")
CONCH_PARTS = {"trunk": "visual.trunk.", "pool": "visual.attn_pool_contrast.", "text": "text."}
CONCH_SINGLE = {"visual.ln_contrast.weight": "ln.weight", "visual.ln_contrast.bias": "ln.bias",
                "visual.proj_contrast": "proj"}


def drop_listed(state: dict[str, torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``state`` without the listed keys (exact names, or prefixes ending in ``.``)."""
    names = tuple(names)
    exact = {n for n in names if not n.endswith(".")}
    prefixes = tuple(n for n in names if n.endswith("."))
    return {k: v for k, v in state.items() if k not in exact and not (prefixes and k.startswith(prefixes))}


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key, when every key has it (``module.`` from DDP, ``vit.`` from HF heads)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers ``ViTModel`` keys (Phikon) to timm ``VisionTransformer`` keys.

    The unused ``pooler.dense`` head is dropped; separate query/key/value projections are fused into ``qkv``.
    """
    state = strip_prefix(state, "vit.")
    return _hf_to_timm(state, _HF_VIT_BLOCK, drop=("pooler.",))


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers ``Dinov2Model`` keys (Phikon-v2) to timm ``VisionTransformer`` keys.

    The ``embeddings.mask_token`` used only by masked-image training is dropped.
    """
    state = strip_prefix(state, "dinov2.")
    return _hf_to_timm(state, _HF_DINOV2_BLOCK, drop=("embeddings.mask_token",))


def pathoduet_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PathoDuet (``VisionTransformerMoCo``) keys to a timm ViT with one register slot for the pretext token.

    PathoDuet orders its prefix as ``[pretext, cls]``; the timm model orders it ``[cls, register]``. The two
    position-embedding rows are swapped with the tokens, so every token meets the same embedding as in the
    original and the outputs are identical (attention does not depend on token order otherwise).
    The MoCo projector ``head.*`` is a training head and is dropped.
    """
    state = strip_prefix(strip_prefix(state, "module."), "base_encoder.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("head.") or key.startswith("head_dist."):
            continue
        if key == "pretext_token":
            out["reg_token"] = value
        elif key == "pos_embed":
            if value.ndim != 3 or value.shape[1] < 2:
                raise BadInput(f"PathoDuet pos_embed has shape {tuple(value.shape)}", "check the checkpoint")
            out["pos_embed"] = torch.cat([value[:, 1:2], value[:, 0:1], value[:, 2:]], dim=1)
        else:
            out[key] = value
    return out


def split_conch(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A CONCH checkpoint split into its parts: ``trunk`` (timm ViT), ``pool`` (the contrastive attentional
    pooler), ``head`` (``ln`` and ``proj`` after it), ``text`` (the text encoder) and ``other`` (anything
    unrecognised, which the caller reports). The captioning pooler, the text decoder and the logit scale are
    training-time parts of CoCa and are dropped."""
    state = strip_prefix(state, "module.")
    parts: dict[str, dict[str, torch.Tensor]] = {"trunk": {}, "pool": {}, "head": {}, "text": {}, "other": {}}
    for key, value in state.items():
        if key.startswith(CONCH_UNUSED):
            continue
        if key in CONCH_SINGLE:
            parts["head"][CONCH_SINGLE[key]] = value
            continue
        for part, prefix in CONCH_PARTS.items():
            if key.startswith(prefix):
                parts[part][key[len(prefix) :]] = value
                break
        else:
            parts["other"][key] = value
    return parts


def _hf_to_timm(
    state: dict[str, torch.Tensor], block_map: dict[str, str], drop: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(drop):
            continue
        if key in _HF_EMBED:
            out[_HF_EMBED[key]] = value
            continue
        match = _HF_BLOCK.match(key)
        if match is None:
            out[key] = value  # unknown: the strict load names it
            continue
        index, rest = match.groups()
        which, _, kind = rest.removeprefix("attention.attention.").partition(".")
        if (
            rest.startswith("attention.attention.")
            and which in ("query", "key", "value")
            and kind in ("weight", "bias")
        ):
            qkv.setdefault((index, kind), {})[which] = value
        elif rest in block_map:
            out[f"blocks.{index}.{block_map[rest]}"] = value
        else:
            out[key] = value
    for (index, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            missing = sorted({"query", "key", "value"} - set(parts))
            raise BadInput(
                f"layer {index} of the checkpoint lacks attention {kind} for {', '.join(missing)}",
                "check that the download finished",
            )
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out

"""The one interface the engine sees over every family of frozen backbone.

The engine inserts prompt tokens between ``embed`` and the blocks, and reads features after ``final_norm``;
it never needs to know whether the tokens came from timm, open_clip or a PathoDuet checkpoint.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from pathotune_cli.backbones.state_dict import HEAD_PREFIXES, check_matches, read_state_dict
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.hardware import Placement

STORED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Frozen-weight storage dtypes ``apply_kernels`` offers besides fp32 (``KernelChoice.weights``)."""

if TYPE_CHECKING:
    from pathotune_cli.backbones.kernels import KernelChoice
    from pathotune_cli.config.run import KernelSpec


class Backbone(nn.Module):
    """A frozen ViT seen as: normalise, embed, blocks, final norm, pool.

    Inputs are RGB images as float tensors in [0, 1], shape (B, 3, H, W); each backbone applies its own
    resize and normalisation, so an instance encoder with other statistics can share the same input.
    """

    preset: BackbonePreset
    width: int
    num_prefix_tokens: int
    num_blocks: int
    ignore_keys: tuple[str, ...] = HEAD_PREFIXES
    """Checkpoint key prefixes that are classification heads, never part of the frozen backbone."""

    def __init__(self, preset: BackbonePreset) -> None:
        super().__init__()
        self.preset = preset
        self.input_size = preset.input_size
        self.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the backbone's input size where needed, then subtract mean and divide by std."""
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = nn.functional.interpolate(
                images, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False, antialias=True
            )
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    @abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images to tokens ``[prefix tokens | patch tokens]``, position embedding included."""

    @abstractmethod
    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Run transformer block ``index`` on (B, L, width) tokens."""

    @abstractmethod
    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The norm after the last block."""

    def place(self, placement: Placement, pass_: str = "inference", pinned: KernelSpec | None = None) -> Backbone:
        """Move to the placement's device and run with the kernels measured fastest there; returns self."""
        from pathotune_cli.backbones.kernels import choose

        self.to(placement.device)
        self.kernels = choose(self, placement, pass_, pinned)
        self.apply_kernels(self.kernels, placement)
        return self

    def attention_choices(self) -> bool:
        """Whether this family can run attention fused or plain (``set_attention``)."""
        return False

    def set_attention(self, kind: str) -> None:
        """Run attention ``fused`` or ``plain``; families with the choice override this."""

    def apply_kernels(self, choice: KernelChoice, placement: Placement) -> None:
        """Run with ``choice``: its attention, and frozen Linear weights stored in fp32, bf16 or fp16.

        Low-precision storage holds the values autocast would cast each Linear's weight and bias to, so outputs
        are the same up to summation order, and the device holds only that copy (half the memory of fp32). The
        fp32 originals stay in host memory, so the backbone can be placed again in fp32, its fingerprint is of
        the originals, and on the CPU code outside autocast still gets the fp32 layer bit for bit.
        """
        self.set_attention(choice.attention)
        originals: dict[str, torch.Tensor] = self.__dict__.setdefault("_fp32_linear", {})
        stored = STORED_DTYPES.get(choice.weights)
        for name, module in self.named_modules():
            if not isinstance(module, nn.Linear) or module.weight.requires_grad:  # method full trains them
                continue
            fp32: dict[str, torch.Tensor | None] = {"weight": None, "bias": None}
            for key in ("weight", "bias"):
                param = getattr(module, key)
                if param is None:
                    continue
                if stored is None and f"{name}.{key}" not in originals:  # fp32 as loaded: nothing to undo
                    continue
                original = originals.setdefault(f"{name}.{key}", _on_host(param.data))
                param.data = original.to(param.device, stored or original.dtype)
                fp32[key] = original if _keeps_fp32(param.device) else None
            if stored is not None:
                module.__dict__["_fp32_params"] = (fp32["weight"], fp32["bias"])
                module.forward = partial(_low_precision_stored_linear, module)
            else:  # the class's own forward again
                module.__dict__.pop("forward", None)
                module.__dict__.pop("_fp32_params", None)

    def block_head(self, index: int, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        """Block ``index``'s output for the first ``rows`` tokens only, every token still a key and a value.

        The last block of a model pooled on its class token need not compute the other tokens' outputs.
        Families that can skip that work override this; the default runs the whole block.
        """
        return self.block(index, tokens)[:, :rows]

    def blocks_then_norm(self, tokens: torch.Tensor, pool: str, first: int = 0) -> torch.Tensor:
        """Blocks ``first`` to the end, then the final norm; with ``token`` pooling the last block computes the
        class token only (the pooled feature is the same, about 7% less work for a ViT's forward and backward)."""
        last = self.num_blocks - 1
        for i in range(first, last):
            tokens = self.block(i, tokens)
        if last >= first:
            tokens = self.block_head(last, tokens, 1) if pool == "token" else self.block(last, tokens)
        return self.final_norm(tokens)

    # -- building and checking weights, shared by loading and by `pathotune weights add` ---------------------
    @classmethod
    def build_module(cls, preset: BackbonePreset) -> nn.Module:
        """The module a checkpoint fills, with random weights (called on the meta device to check a file)."""
        raise NotImplementedError

    @classmethod
    def prepare_state(
        cls, state: dict[str, torch.Tensor], module: nn.Module, preset: BackbonePreset, source: str
    ) -> dict[str, torch.Tensor]:
        """The published checkpoint's tensors renamed to ``module``'s keys (a pure key conversion)."""
        raise NotImplementedError

    @classmethod
    def check_weight_file(cls, preset: BackbonePreset, path: Path) -> int:
        """Check a weight file's keys and shapes against the architecture without loading it; returns the
        number of tensors that match. The model is built on the meta device, so this is cheap for ViT-g too.

        Raises:
            BadInput: naming missing, unexpected or wrongly shaped keys.
        """
        with torch.device("meta"):
            module = cls.build_module(preset)
        state = cls.prepare_state(read_state_dict(path, lazy=True), module, preset, str(path))
        return check_matches(module.state_dict(), state, str(path), cls.ignore_keys)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled feature a head reads, with the preset's pooling."""
        return self.pooled_dim(self.preset.pool)

    def pooled_dim(self, pool: str) -> int:
        """Width of the pooled feature for ``pool``."""
        return self.width * (2 if pool == "token+avg" else 1)

    def pool(self, tokens: torch.Tensor, skip: int = 0, pool: str | None = None) -> torch.Tensor:
        """Pool normed tokens into one feature per image.

        Args:
            tokens: (B, L, width) after ``final_norm``.
            skip: prompt tokens sitting between the prefix and the patch tokens, left out of averages.
            pool: ``token``, ``avg`` or ``token+avg``; None takes the preset's.
        """
        pool = pool or self.preset.pool
        patches = tokens[:, self.num_prefix_tokens + skip :]
        if pool == "token":
            return tokens[:, 0]
        if pool == "avg":
            return self.avg_norm(patches.mean(dim=1))
        if pool == "token+avg":
            return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)
        raise ValueError(f"backbone '{self.preset.name}' has no '{pool}' pooling")

    def avg_norm(self, pooled: torch.Tensor) -> torch.Tensor:
        """The norm some backbones apply after average pooling (timm's ``fc_norm``); identity by default."""
        return pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Plain features with no prompts: what the backbone alone makes of an image."""
        tokens = self.embed(self.normalise(images))
        return self.pool(self.blocks_then_norm(tokens, self.preset.pool))

    def encode_text(self, texts: list[str]) -> torch.Tensor | None:
        """The backbone's own text tower, where it has one: (T, D) unit-norm embeddings; else None."""
        return None

    def text_projection(self, feature_dim: int) -> tuple[torch.Tensor, float] | None:
        """Where the backbone has a text tower: the matrix (feature_dim, D) that maps its pooled image feature into
        the text embedding space, and its logit scale (zero-shot classification); else None."""
        return None

    def frozen_state(self) -> dict[str, torch.Tensor]:
        """The tensors that define this backbone's identity (what the fingerprint covers): the fp32 originals of
        weights stored in bf16 by ``apply_kernels``."""
        state = {k: v for k, v in self.state_dict().items() if k not in ("mean", "std")}
        state.update({k: v for k, v in self.__dict__.get("_fp32_linear", {}).items() if k in state})
        return state


def linear_parameters(module: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) a frozen Linear computes ``x`` with: its stored ones under autocast; outside autocast,
    for weights ``apply_kernels`` stored in bf16 or fp16, the fp32 originals on the CPU, and the stored values
    in ``x``'s dtype on other devices (which hold no fp32 copy). For code that calls ``F.linear`` itself."""
    fp32 = module.__dict__.get("_fp32_params")
    if fp32 is None or torch.is_autocast_enabled(x.device.type):
        return module.weight, module.bias
    if fp32[0] is not None and fp32[0].device == x.device:
        return fp32
    bias = module.bias.to(x.dtype) if module.bias is not None else None
    return module.weight.to(x.dtype), bias


def _low_precision_stored_linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A frozen Linear whose weights are stored in bf16 or fp16: those under autocast, fp32 otherwise.

    Under autocast this is what autocast would compute anyway (its casts of the weights are already done); a
    caller that runs without autocast (an explanation, the first pass of the two-pass gradient) still gets
    a full-precision layer, never a dtype error.
    """
    weight, bias = linear_parameters(module, x)
    return torch.nn.functional.linear(x, weight, bias)


def _keeps_fp32(device: torch.device) -> bool:
    """Whether the fp32 originals already live on ``device``: the CPU, where they cost no extra memory. A GPU
    holds only the low-precision copy."""
    return device.type == "cpu"


def _on_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself on the CPU; a host copy of a device tensor (the fp32 original a GPU does not keep)."""
    return tensor if tensor.device.type == "cpu" else tensor.detach().to("cpu")

"""Low-rank adapters (LoRA, Hu et al. 2021) on a frozen backbone's linear layers, without touching the backbone.

Each adapted ``nn.Linear`` gets a forward hook that adds ``alpha / rank * B(A(dropout(x)))`` to its output while
the adapters are switched on (``PromptedModel.features`` switches them on; the bare backbone, the IVP instance
encoder ``self`` and ``pathotune features --backbone`` see the frozen model). The backbone's modules, parameters
and state dict stay exactly as loaded, so its fingerprint, the kernel choices (bf16-stored weights) and every
family's key layout are unaffected; ``B`` starts at zero, so an untrained adapter changes nothing.

Why not HF ``peft``: it replaces each adapted module by a wrapper (renaming ``qkv.weight`` to
``qkv.base_layer.weight``), which would change the frozen backbone's state dict and fingerprint and bypass the
code that reads ``attn.qkv``'s weights directly (``backbones.timm_vit.head_rows_of_block``, the bf16 weight
store), and it pulls transformers and accelerate for what is about forty lines here.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from pathotune_cli.config.run import LoRASettings

TARGET_PATTERNS = {
    "qkv": r"attn\.qkv",
    "proj": r"attn\.proj",
    "mlp": r"mlp\.fc[12]",
}
"""Module names (after ``blocks.N.``) each ``lora.targets`` entry adapts: timm's ViT layout, which UNI, Virchow2,
H-optimus, Prov-GigaPath, DINOv2, PathoDuet and CONCH's trunk share."""


def lora_targets(backbone: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The backbone's ``nn.Linear`` modules that ``targets`` name, by module name, in model order."""
    wanted = "|".join(TARGET_PATTERNS[t] for t in targets)
    pattern = re.compile(rf"(^|\.)blocks\.\d+\.({wanted})$")
    return {name: m for name, m in backbone.named_modules() if isinstance(m, nn.Linear) and pattern.search(name)}


class LoRALayer(nn.Module):
    """``scale * up(down(dropout(x)))``: ``down`` (rank x in) Kaiming-uniform, ``up`` (out x rank) zeros."""

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The low-rank update for input ``x``."""
        return self.up(self.down(self.dropout(x))) * self.scale


class LoRAAdapters(nn.Module):
    """One ``LoRALayer`` per adapted Linear, hooked onto it; only these parameters train."""

    def __init__(self, backbone: nn.Module, settings: LoRASettings, rank: int) -> None:
        super().__init__()
        targets = lora_targets(backbone, list(settings.targets))
        scale = (settings.alpha if settings.alpha is not None else rank) / rank
        self.layers = nn.ModuleDict({
            name.replace(".", "_"): LoRALayer(m.in_features, m.out_features, rank, scale, settings.dropout)
            for name, m in targets.items()
        })
        self.on = False
        self._handles = [m.register_forward_hook(self._hook(name.replace(".", "_"))) for name, m in targets.items()]

    def __len__(self) -> int:
        return len(self.layers)

    def _hook(self, key: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor | None]:
        def add_update(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Tensor | None:
            if not self.on:
                return None
            return output + self.layers[key](inputs[0]).to(output.dtype)

        return add_update

    @contextlib.contextmanager
    def switched_on(self) -> Iterator[None]:
        """The adapters add their updates inside this block only."""
        before, self.on = self.on, True
        try:
            yield
        finally:
            self.on = before

    def remove(self) -> None:
        """Take the hooks off the backbone (the backbone is then exactly the frozen model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

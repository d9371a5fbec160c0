"""CONCH (Lu et al., Nature Medicine 2024): a CoCa-style vision-language model for pathology.

CONCH ships its own code, not an open_clip model: the image tower is a timm ViT-B/16 trunk at 448 px
(``visual.trunk.*``) followed by an attentional pooler (``visual.attn_pool_contrast``, one query) and a
LayerNorm; its image embedding for linear probes is that 512-d pooled vector. The text tower is a CoCa text
encoder with an appended CLS embedding and a 32,007-token byte-level BPE vocabulary. open_clip 3.3 cannot build
this checkpoint (its CoCa has no timm trunk with attentional pooling), so this adapter assembles the same
modules from their parts: the timm trunk, open_clip's ``AttentionalPooler`` and open_clip's
``TextTransformer`` (``embed_cls``, legacy CLS mask), which compute what CONCH's classes compute with the same
parameter names. The captioning pooler and the text decoder are CoCa training parts and are not loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathotune_cli.backbones.base import Backbone
from pathotune_cli.backbones.convert import drop_listed, split_conch
from pathotune_cli.backbones.state_dict import load_strict, read_state_dict
from pathotune_cli.backbones.timm_vit import build_timm_vit, check_matches_preset, convert_timm_state
from pathotune_cli.backbones.weights import WeightSource
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput, MissingDependency

TEXT_DEFAULTS: dict[str, Any] = {"context_length": 127, "vocab_size": 32007, "width": 768, "heads": 12, "layers": 12}
"""CONCH's text encoder: 128 positions, the last one the appended CLS embedding."""


class Conch(Backbone):
    """CONCH's image trunk (prompts go here), its attentional pooler, and its text tower for ``encode_text``."""

    ignore_keys = ()

    def __init__(self, preset: BackbonePreset, source: WeightSource) -> None:
        super().__init__(preset)
        self.tower = self.build_module(preset)
        if source.path is not None:
            state = self.prepare_state(read_state_dict(source.path), self.tower, preset, str(source.path))
            load_strict(self.tower, state, str(source.path), ignore=())
        trunk = self.tower.trunk
        check_matches_preset(trunk, preset)
        self.width = trunk.embed_dim
        self.num_prefix_tokens = trunk.num_prefix_tokens
        self.num_blocks = len(trunk.blocks)
        self._weights_dir = source.path.parent if source.path is not None else None
        self._tokenizer = None

    @classmethod
    def build_module(cls, preset: BackbonePreset) -> nn.Module:
        from open_clip.transformer import AttentionalPooler, TextTransformer

        cfg = dict(preset.model_kwargs)
        trunk_preset = preset.model_copy(update={"model_kwargs": cfg.get("trunk", {}), "pool": "token"})
        embed_dim = int(cfg.get("embed_dim", 512))
        text_cfg = {**TEXT_DEFAULTS, **cfg.get("text", {})}
        tower = nn.Module()
        tower.trunk = build_timm_vit(trunk_preset)
        width = tower.trunk.embed_dim
        tower.pool = AttentionalPooler(
            d_model=embed_dim, context_dim=width, n_head=int(cfg.get("pooler_heads", 8)), n_queries=1
        )
        tower.ln_contrast = nn.LayerNorm(embed_dim)
        tower.proj_contrast = nn.Parameter(torch.zeros(embed_dim, embed_dim))
        tower.text = TextTransformer(
            context_length=text_cfg["context_length"], vocab_size=text_cfg["vocab_size"], width=text_cfg["width"],
            heads=text_cfg["heads"], layers=text_cfg["layers"], output_dim=embed_dim, embed_cls=True,
            pad_id=int(text_cfg.get("pad_id", 0)), correct_cls_mask=False,
        )
        return tower

    @classmethod
    def prepare_state(
        cls, state: dict[str, torch.Tensor], module: nn.Module, preset: BackbonePreset, source: str
    ) -> dict[str, torch.Tensor]:
        parts = split_conch(drop_listed(state, preset.drop_keys))
        if not parts["trunk"]:
            raise BadInput(f"{source} has no visual.trunk.* tensors, so it is not a CONCH checkpoint", "check the file")
        out = {f"trunk.{k}": v for k, v in convert_timm_state(parts["trunk"], module.trunk).items()}
        out.update({f"pool.{k}": v for k, v in parts["pool"].items()})
        out.update({f"text.{k}": v for k, v in parts["text"].items()})
        for key, value in parts["head"].items():
            out["proj_contrast" if key == "proj" else f"ln_contrast.{key.removeprefix('ln.')}"] = value
        out.update(parts["other"])  # unrecognised: the strict check names them
        return out

    # -- the adapter interface ---------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        trunk = self.tower.trunk
        x = trunk._pos_embed(trunk.patch_embed(images))
        return trunk.norm_pre(trunk.patch_drop(x))

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.trunk.blocks[index](tokens)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.trunk.norm(tokens)

    def pooled_dim(self, pool: str) -> int:
        return self.tower.ln_contrast.normalized_shape[0] if pool == "attn" else super().pooled_dim(pool)

    def pool(self, tokens: torch.Tensor, skip: int = 0, pool: str | None = None) -> torch.Tensor:
        """``attn``: CONCH's own image embedding, its attentional pooler over the trunk's tokens (prompt tokens
        left out, so it sees exactly the tokens it was trained on) and the LayerNorm after it."""
        pool = pool or self.preset.pool
        if pool != "attn":
            return super().pool(tokens, skip, pool)
        p = self.num_prefix_tokens
        kept = torch.cat([tokens[:, :p], tokens[:, p + skip :]], dim=1) if skip else tokens
        return self.tower.ln_contrast(self.tower.pool(kept)[:, 0])

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokenizer = self._load_tokenizer()
        ids = tokenizer(
            texts, max_length=self.tower.text.context_length, add_special_tokens=True, truncation=True,
            padding="max_length", return_tensors="pt", return_token_type_ids=False,
        )["input_ids"]
        with torch.no_grad():
            emb = self.tower.text(ids)
        return nn.functional.normalize(emb.float(), dim=-1)

    def text_projection(self, feature_dim: int) -> tuple[torch.Tensor, float] | None:
        """CONCH's image embedding is its attention-pooled feature times ``proj_contrast`` (pool ``attn``)."""
        proj = self.tower.proj_contrast
        return (proj.detach(), 100.0) if proj.shape[0] == feature_dim else None

    def frozen_state(self) -> dict[str, torch.Tensor]:
        return dict(self.tower.state_dict())

    def _load_tokenizer(self) -> Any:  # a transformers tokenizer
        if self._tokenizer is not None:
            return self._tokenizer
        path = find_tokenizer(self.preset, self._weights_dir)
        try:
            from transformers import PreTrainedTokenizerFast
        except ImportError:
            raise MissingDependency(
                "CONCH's text tower needs the transformers package", "pip install transformers"
            ) from None
        self._tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(path), bos_token="<start_of_text>", eos_token="<end_of_text>", pad_token="<pad>"
        )
        return self._tokenizer


def find_tokenizer(preset: BackbonePreset, weights_dir: Path | None) -> Path:
    """CONCH's tokenizer file: beside the weight file, else inside an installed ``conch`` package.

    Raises:
        MissingDependency: naming the file and where to get it.
    """
    names = preset.tokenizer_files or ["conch_byte_level_bpe_uncased.json"]
    candidates = [weights_dir / n for n in names] if weights_dir is not None else []
    spec = importlib.util.find_spec("conch")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        candidates += [root / "open_clip_custom" / "tokenizers" / n for n in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f"beside the weights in {weights_dir}" if weights_dir is not None else "beside the weight file"
    raise MissingDependency(
        f"CONCH's text tower needs its tokenizer file {names[0]}, found neither {where} nor in a conch package",
        f"copy conch/open_clip_custom/tokenizers/{names[0]} from github.com/mahmoodlab/CONCH {where}, "
        "or use --set prompt.ttp.encoder=minilm",
    )

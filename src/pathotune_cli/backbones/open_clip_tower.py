"""open_clip visual towers (CLIP, QuiltNet, PLIP-style), whose own text tower serves the textual prompts."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from pathotune_cli.backbones.base import Backbone
from pathotune_cli.backbones.state_dict import load_strict, read_state_dict
from pathotune_cli.backbones.weights import WeightSource
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput


class OpenClipTower(Backbone):
    """Adapter over ``open_clip``'s ``VisionTransformer``; keeps the text tower for ``encode_text``."""

    ignore_keys = ()

    def __init__(self, preset: BackbonePreset, source: WeightSource) -> None:
        super().__init__(preset)
        import open_clip

        self.clip = self.build_module(preset)
        if source.path is not None:
            state = self.prepare_state(read_state_dict(source.path), self.clip, preset, str(source.path))
            load_strict(self.clip, state, str(source.path), ignore=())
        self.tokenizer = open_clip.get_tokenizer(_register_inline_config(preset))
        visual = self.clip.visual
        if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "transformer"):
            raise BadInput(
                f"backbone preset '{preset.name}': attention-pooled towers are not supported",
                "use a CLS-token tower",
            )
        self.visual = visual
        self.width = visual.conv1.out_channels
        self.num_prefix_tokens = 1
        self.num_blocks = len(visual.transformer.resblocks)
        self._batch_first = getattr(visual.transformer, "batch_first", True)
        if preset.width != self.width:
            raise BadInput(
                f"backbone preset '{preset.name}' says width={preset.width} but the tower has {self.width}",
                f"set width: {self.width}",
            )

    @classmethod
    def build_module(cls, preset: BackbonePreset) -> torch.nn.Module:
        import open_clip

        name = _register_inline_config(preset)
        device = "meta" if torch.empty(0).device.type == "meta" else "cpu"
        try:
            with _quiet_open_clip():
                return open_clip.create_model(name, pretrained=None, force_image_size=preset.input_size, device=device)
        except RuntimeError as exc:
            raise BadInput(
                f"backbone preset '{preset.name}': open_clip cannot build '{name}': {exc}",
                "fix the preset",
            ) from None

    @classmethod
    def prepare_state(
        cls, state: dict[str, torch.Tensor], module: torch.nn.Module, preset: BackbonePreset, source: str
    ) -> dict[str, torch.Tensor]:
        from pathotune_cli.backbones.convert import drop_listed, strip_prefix

        return drop_listed(strip_prefix(state, "module."), preset.drop_keys)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(images)

    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        blk = self.visual.transformer.resblocks[index]
        if self._batch_first:
            return blk(tokens)
        return blk(tokens.transpose(0, 1)).transpose(0, 1)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(tokens)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            emb = self.clip.encode_text(self.tokenizer(texts))
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    def text_projection(self, feature_dim: int) -> tuple[torch.Tensor, float] | None:
        proj = getattr(self.visual, "proj", None)
        if proj is None or proj.shape[0] != feature_dim:
            return None
        return proj.detach(), logit_scale(self.clip)

    def frozen_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.clip.state_dict().items()}


def logit_scale(model: torch.nn.Module) -> float:
    """A CLIP model's learnt logit scale (``exp(logit_scale)``, at most 100 as CLIP clamps it); 100 without one."""
    value = getattr(model, "logit_scale", None)
    return min(100.0, float(value.detach().exp())) if isinstance(value, torch.Tensor) else 100.0


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs "... initialized randomly" on the root logger when it builds a model without weights;
    ours are loaded right after (strictly), so that one notice is noise. Everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "random" not in record.getMessage().lower()


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's random-init notice while a model is built, leaving the root logger's level alone."""
    root = logging.getLogger()
    notice = _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def _register_inline_config(preset: BackbonePreset) -> str:
    """A preset may carry its own open_clip ``model_cfg`` (small test towers): hand it to open_clip's table of
    model configs under the preset's model name. open_clip reads the file when it is added, so the folder goes
    at once; registering the same name again replaces the config."""
    cfg = preset.model_kwargs.get("model_cfg")
    if cfg is None:
        return preset.model
    import open_clip

    with tempfile.TemporaryDirectory(prefix="pathotune-openclip-") as folder:
        (Path(folder) / f"{preset.model}.json").write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(folder)
    return preset.model

"""Build a prompted model for a run: backbone, instance encoder, the task's text embeddings (once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathotune_cli.backbones import load_backbone
from pathotune_cli.backbones.base import Backbone
from pathotune_cli.backbones.fingerprint import fingerprint_of
from pathotune_cli.config import load_backbone_preset
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.config.schema import BackbonePreset, TaskPreset
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.text import encode_texts
from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    import torch


@dataclass
class BuiltModel:
    """A fresh prompted model and what its prompt file must record about how it was made."""

    model: PromptedModel
    backbone_fingerprint: str
    instance_preset: BackbonePreset | None
    instance_fingerprint: str | None
    text_encoder: str | None
    texts: list[str]
    stain: dict[str, Any] = field(default_factory=dict)
    """The header's ``stain`` (``StainSpec``) and ``stain_stats`` (``StainStats``), once ``engine.stain_fit``
    has fitted them to the training tiles."""


def text_encoder_for(settings: PromptSettings, backbone: BackbonePreset) -> str:
    """The text encoder a run uses: the prompt setting, else the backbone preset's choice."""
    return settings.ttp.encoder or backbone.text_encoder


def build_prompted_model(
    task: TaskPreset,
    backbone_preset: BackbonePreset,
    settings: PromptSettings,
    weights: str | Path | None = None,
    allow_download: bool = False,
) -> BuiltModel:
    """Load the frozen parts and wrap them with fresh prompts and a head for ``task``."""
    backbone: Backbone = load_backbone(backbone_preset, weights, allow_download)
    backbone_fp = fingerprint_of(backbone)
    instance_preset = None
    instance = None
    instance_fp = None
    texts = task.texts()
    embeddings = None
    encoder_name = None
    if settings.uses_ivp and settings.ivp.encoder != "self":
        instance_preset = load_backbone_preset(settings.ivp.encoder)
        instance = load_backbone(instance_preset, None, allow_download)
        instance_fp = fingerprint_of(instance)
    if settings.uses_ttp:
        encoder_name = text_encoder_for(settings, backbone_preset)
        embeddings = encode_texts(texts, encoder_name, backbone)
    class_text = None
    if settings.method == "zeroshot":
        texts, encoder_name = texts[1:], "self"  # one description per class; the prompt file records them
        class_text = zero_shot_text(backbone, texts)
    try:
        model = PromptedModel(backbone, settings, len(task.classes), embeddings, instance, class_text)
    except ValueError as exc:  # a method this backbone cannot carry (no text tower, no LoRA targets)
        raise BadInput(str(exc), "choose another --method or --backbone") from None
    return BuiltModel(model, backbone_fp, instance_preset, instance_fp, encoder_name, texts)


def zero_shot_text(backbone: Backbone, texts: list[str]) -> torch.Tensor:
    """Each class description through the backbone's own text tower: (C, D) unit-norm embeddings.

    Raises:
        BadInput: the backbone has no text tower.
    """
    embeddings = backbone.encode_text(texts)
    if embeddings is None:
        raise BadInput(f"method 'zeroshot' needs a backbone with a text tower; '{backbone.preset.name}' has none",
                       "use clip-vit-b16, quiltnet-b32 or conch, or another --method")
    return embeddings

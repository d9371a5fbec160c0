"""Rebuild a prompted model from a prompt file, refusing any backbone other than the one it was tuned on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pathotune_cli import __version__
from pathotune_cli.backbones import load_backbone
from pathotune_cli.backbones.base import Backbone
from pathotune_cli.backbones.fingerprint import fingerprint_of
from pathotune_cli.config.schema import BackbonePreset, TaskPreset
from pathotune_cli.engine.build import BuiltModel
from pathotune_cli.engine.header import FrozenPart, Preprocessing, PromptHeader
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.promptfile import ALTERED, PromptFile, check_tensors, read_prompt_file
from pathotune_cli.engine.trust import OOD_TENSORS, TrustStats
from pathotune_cli.engine.trust import TENSOR_PREFIX as TRUST_PREFIX
from pathotune_cli.errors import BadInput


def prompt_header(
    built: BuiltModel,
    task: TaskPreset,
    backbone: BackbonePreset,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    slide: dict[str, Any] | None = None,
    trust: TrustStats | None = None,
    stain: dict[str, Any] | None = None,
) -> PromptHeader:
    """The header of a new prompt file: everything needed to rebuild and to trust the model.

    ``slide`` holds a slide-level file's extra fields (``level``, ``mil``, ``tile_source``, ``source_prompts``,
    ``trainable_parameters``); ``built.model`` is then its tile encoder. ``stain`` holds ``stain`` (a
    ``StainSpec``) and ``stain_stats`` (a ``StainStats``), either None.
    """
    model = built.model
    instance = None
    if built.instance_preset is not None and model.instance_encoder is not None:
        instance = FrozenPart(
            preset=built.instance_preset,
            fingerprint=built.instance_fingerprint or "",
            weight_source=model.instance_encoder.weight_source.kind,
        )
    fields: dict[str, Any] = dict(
        pathotune_version=__version__,
        backbone=FrozenPart(
            preset=backbone, fingerprint=built.backbone_fingerprint, weight_source=model.backbone.weight_source.kind
        ),
        instance_encoder=instance,
        task=task,
        classes=task.class_names,
        prompt=model.settings,
        method=model.method,
        text_encoder=built.text_encoder,
        texts=built.texts if model.ttp is not None or model.method == "zeroshot" else [],
        preprocessing=Preprocessing(input_size=backbone.input_size, mean=backbone.mean, std=backbone.std),
        tile=task.tile,
        trainable_parameters=model.trainable_parameters(),
        backbone_parameters=model.backbone_parameters(),
        metrics=metrics,
        training=training,
        trust=trust,
    )
    return PromptHeader(**{**fields, **(slide or {}), **built.stain, **(stain or {})})


def random_weights_warning(model: PromptedModel) -> str | None:
    """One line naming the frozen parts of ``model`` that run on random weights, or None when none does."""
    parts = [model.backbone, model.instance_encoder]
    names = [bb.preset.name for bb in parts if bb is not None and bb.weight_source.kind == "random"]
    if not names:
        return None
    which = " and ".join(f"'{n}'" for n in dict.fromkeys(names))
    return f"backbone {which} has random weights: for tests and demos only, not for diagnostic use"


def load_prompted_model(
    path: str | Path, weights: str | Path | None = None, allow_download: bool = False
) -> tuple[PromptedModel, PromptFile]:
    """Read a prompt file and rebuild its model in eval mode.

    Raises:
        BadInput: the file is damaged, or the backbone that loads here is not the one it was tuned on.
    """
    file = read_prompt_file(path)
    header = file.header
    if header.mil is not None:  # the header validates: only a slide-level file has mil settings
        raise BadInput(
            f"{file.path} is a slide-level prompt file (task {header.task.name}): it predicts one label per slide",
            "give it slides (predict, eval with a slides CSV); a tile-level file classifies tiles",
        )
    backbone, instance = load_frozen_parts(file, weights, allow_download)
    try:
        model = PromptedModel(backbone, header.prompt, len(header.classes), stored_text_embeddings(file), instance,
                              file.tensors.get("head.text"))
    except ValueError as exc:
        raise BadInput(f"{file.path}: {exc}", ALTERED) from None
    model.resize_for(file.tensors)
    model.stain = stored_stain(file)
    check_tensors(file, model.trained_state())
    check_trust_tensors(file, model.head.in_features)
    model.load_trained({k: v for k, v in file.tensors.items() if not k.startswith(TRUST_PREFIX)})
    model.requires_grad_(False)
    return model.eval(), file


def load_frozen_parts(
    file: PromptFile, weights: str | Path | None = None, allow_download: bool = False
) -> tuple[Backbone, Backbone | None]:
    """The backbone and instance encoder a prompt file was tuned on, each checked by fingerprint.

    Raises:
        BadInput: the weights that load here are another backbone's.
    """
    header = file.header
    backbone = load_backbone(header.backbone.preset, weights, allow_download)
    check_fingerprint(file, header.backbone, backbone)
    instance = None
    if header.instance_encoder is not None:
        instance = load_backbone(header.instance_encoder.preset, None, allow_download)
        check_fingerprint(file, header.instance_encoder, instance)
    return backbone, instance


def stored_text_embeddings(file: PromptFile, prefix: str = "") -> torch.Tensor | None:
    """The task's text embeddings stored in the file (``pathotune`` with TTP only), checked against its texts.

    Raises:
        BadInput: a ``pathotune`` file without them, or with another count than its task has texts.
    """
    header = file.header
    embeddings = file.tensors.get(f"{prefix}ttp.text_embeddings")
    if header.prompt.uses_ttp and embeddings is None:
        raise BadInput(f"{file.path}: method 'pathotune' but no stored text embeddings", ALTERED)
    texts = len(header.texts) if header.texts else len(header.task.texts())
    if embeddings is not None and (embeddings.dim() != 2 or embeddings.shape[0] != texts):
        raise BadInput(f"{file.path}: {tuple(embeddings.shape)} stored text embeddings for {texts} texts", ALTERED)
    return embeddings


def stored_stain(file: PromptFile) -> torch.nn.Module | None:
    """The stain normalisation stored in the file (``stain`` in the header, ``stain.*`` tensors), or None.

    Raises:
        BadInput: the header names a stain method whose tensors are missing or of the wrong shape.
    """
    from pathotune_cli.engine.stain import StainNormaliser, reference_shapes

    spec = file.header.stain
    if spec is None:
        return None
    shapes = reference_shapes(spec.method)
    tensors = {name: file.tensors.get(f"stain.{name}") for name in shapes}
    bad = [n for n, t in tensors.items() if t is None or tuple(t.shape) != shapes[n] or not torch.isfinite(t).all()]
    if bad:
        raise BadInput(f"{file.path}: its {spec.method} stain reference 'stain.{bad[0]}' is missing or malformed",
                       ALTERED)
    return StainNormaliser(spec.method, tensors)  # type: ignore[arg-type]


def check_trust_tensors(file: PromptFile, feature_dim: int) -> None:
    """The ``trust.*`` tensors must be exactly those the header's trust section names, with consistent shapes.

    Raises:
        BadInput: a tensor missing or unexpected, or shapes that do not fit the header or the model's features.
    """
    header = file.header
    present = sorted(k for k in file.tensors if k.startswith(TRUST_PREFIX))
    ood = header.trust.ood if header.trust is not None else None
    wanted = sorted(OOD_TENSORS) if ood is not None else []
    if present != wanted:
        raise BadInput(f"{file.path}: trust tensors {present or 'none'} do not match its metadata ({wanted or 'none'})",
                       ALTERED)
    if ood is None:
        return
    means, basis, variances = (file.tensors[k] for k in OOD_TENSORS)
    fits = (
        means.dim() == 2 and means.shape == (len(ood.classes), feature_dim) and basis.dim() == 2
        and basis.shape[0] == feature_dim and variances.shape == (basis.shape[1],)
    )
    if not fits:
        raise BadInput(
            f"{file.path}: OOD tensors of shapes {tuple(means.shape)}, {tuple(basis.shape)}, {tuple(variances.shape)} "
            f"do not fit {len(ood.classes)} classes and {feature_dim}-d features", ALTERED,
        )


def check_fingerprint(file: PromptFile, part: FrozenPart, backbone: Backbone) -> None:
    """The weights loaded here must be the ones the file was tuned on.

    Raises:
        BadInput: naming both fingerprints and the fix.
    """
    actual = fingerprint_of(backbone)
    if actual != part.fingerprint:
        where = backbone.weight_source.describe()
        name = part.preset.name
        raise BadInput(
            f"{file.path} was tuned on backbone '{name}' (fingerprint {part.fingerprint}), but the weights loaded "
            f"here ({where}) are a different backbone (fingerprint {actual})",
            f"load it with the weights of '{name}' it was tuned on (--weights FILE)",
        )

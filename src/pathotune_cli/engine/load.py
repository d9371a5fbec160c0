"""Rebuild a prompted model from a prompt file, refusing any backbone other than the one it was tuned on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathotune_cli.backbones import load_backbone
from pathotune_cli.backbones.fingerprint import fingerprint
from pathotune_cli.config.loader import validate
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.config.schema import BackbonePreset, TaskPreset
from pathotune_cli.engine.build import BuiltModel
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.promptfile import PromptFile, check_tensors, read_prompt_file
from pathotune_cli.errors import BadInput


def prompt_file_meta(built: BuiltModel, task: TaskPreset, backbone: BackbonePreset, **extra: Any) -> dict[str, Any]:
    """The header of a prompt file: everything needed to rebuild and to trust the model."""
    model = built.model
    return {
        "backbone": {
            "preset": backbone.model_dump(mode="json"),
            "fingerprint": built.backbone_fingerprint,
            "weight_source": model.backbone.weight_source.kind,
        },
        "instance_encoder": (
            None
            if built.instance_preset is None
            else {
                "preset": built.instance_preset.model_dump(mode="json"),
                "fingerprint": built.instance_fingerprint,
                "weight_source": model.instance_encoder.weight_source.kind,
            }
        ),
        "task": task.model_dump(mode="json"),
        "classes": task.class_names,
        "prompt": model.settings.model_dump(mode="json"),
        "method": model.method,
        "text_encoder": built.text_encoder,
        "texts": built.texts if model.ttp is not None else [],
        "preprocessing": {
            "input": "RGB float in [0, 1], (B, 3, H, W); the model resizes and normalises itself",
            "input_size": backbone.input_size,
            "mean": list(backbone.mean),
            "std": list(backbone.std),
        },
        "tile": task.tile.model_dump(mode="json"),
        "trainable_parameters": model.trainable_parameters(),
        "backbone_parameters": model.backbone_parameters(),
        **extra,
    }


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
    meta = file.meta
    source = str(file.path)
    preset = validate(BackbonePreset, meta["backbone"]["preset"], source=f"{source} (backbone)")
    task = validate(TaskPreset, meta["task"], source=f"{source} (task)")
    settings = validate(PromptSettings, meta["prompt"], source=f"{source} (prompt)")
    backbone = load_backbone(preset, weights, allow_download)
    _check_fingerprint(file, preset.name, meta["backbone"]["fingerprint"], backbone, weights)
    instance = None
    if meta.get("instance_encoder"):
        inst_preset = validate(
            BackbonePreset, meta["instance_encoder"]["preset"], source=f"{source} (instance encoder)"
        )
        instance = load_backbone(inst_preset, None, allow_download)
        _check_fingerprint(file, inst_preset.name, meta["instance_encoder"]["fingerprint"], instance, None)
    embeddings = file.tensors.get("ttp.text_embeddings")
    if settings.method == "pathotune" and embeddings is None:
        raise BadInput(
            f"{source}: method 'pathotune' but no stored text embeddings",
            "the file was altered; re-run `pathotune tune`",
        )
    if meta.get("classes", task.class_names) != task.class_names:
        raise BadInput(
            f"{source}: its class list does not match its task",
            "the file was altered; re-run `pathotune tune`",
        )
    if embeddings is not None and embeddings.shape[0] != len(task.texts()):
        raise BadInput(
            f"{source}: {embeddings.shape[0]} stored text embeddings for {len(task.texts())} task texts",
            "the file was altered; re-run `pathotune tune`",
        )
    model = PromptedModel(backbone, settings, len(task.classes), embeddings, instance)
    check_tensors(file, model.trained_state())
    model.load_state_dict(file.tensors, strict=False)
    model.requires_grad_(False)
    return model.eval(), file


def _check_fingerprint(file: PromptFile, name: str, expected: str, backbone, weights) -> None:  # noqa: ANN001
    actual = fingerprint(backbone.frozen_state())
    if actual != expected:
        where = backbone.weight_source.describe()
        raise BadInput(
            f"{file.path} was tuned on backbone '{name}' (fingerprint {expected}), but the weights loaded here "
            f"({where}) are a different backbone (fingerprint {actual})",
            f"load it with the weights of '{name}' it was tuned on (--weights FILE)",
        )

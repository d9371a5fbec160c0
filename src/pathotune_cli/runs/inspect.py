"""``pathotune inspect`` as a function: what a prompt file holds, whether it is intact, whether it loads here.

Intact means the header parses and every tensor has the shape the header implies. The expected shapes come
from the real ``PromptedModel`` built on the ``meta`` device (no memory, no weight file read), so they can
never drift from what ``load_prompted_model`` would build; the backbone's weights are never loaded.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, PathotuneError


def inspect_run(prompts: str | Path) -> dict[str, Any]:
    """Summarise and verify a prompt file; returns the document the CLI renders (and ``--json`` prints).

    Raises:
        BadInput: missing or truncated file, a header that does not parse or validate, or a tensor is missing,
            unexpected or of the wrong shape.
    """
    from pathotune_cli.config.loader import validate
    from pathotune_cli.config.run import PromptSettings
    from pathotune_cli.config.schema import BackbonePreset, TaskPreset
    from pathotune_cli.engine.promptfile import check_tensors, read_prompt_file
    from pathotune_cli.runs.records import file_sha256

    file = read_prompt_file(prompts)
    meta, source = file.meta, str(file.path)
    backbone = validate(
        BackbonePreset, _section(meta, "backbone", "preset", source), source=f"{source} (backbone)"
    )
    task = validate(TaskPreset, meta["task"], source=f"{source} (task)")
    settings = validate(PromptSettings, meta["prompt"], source=f"{source} (prompt)")
    instance = None
    if meta.get("instance_encoder"):
        instance = validate(
            BackbonePreset,
            _section(meta, "instance_encoder", "preset", source),
            source=f"{source} (instance encoder)",
        )
    if meta.get("classes", task.class_names) != task.class_names:
        raise BadInput(
            f"{source}: its class list does not match its task's classes",
            "the file was altered; re-run `pathotune tune`",
        )

    expected, skipped = expected_tensors(file, task, backbone, settings, instance)
    if expected is not None:
        check_tensors(file, expected)

    tensors = [
        {
            "name": name,
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "numel": t.numel(),
        }
        for name, t in sorted(file.tensors.items())
    ]
    stat = file.path.stat()
    return {
        "file": {
            "path": source,
            "bytes": stat.st_size,
            "sha256": file_sha256(file.path),
            "modified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stat.st_mtime)),
        },
        "format_version": meta.get("format_version"),
        "pathotune_version": meta.get("pathotune_version"),
        "created": meta.get("created"),
        "task": task.name,
        "classes": [{"name": c.name, "description": c.description} for c in task.classes],
        "method": settings.method,
        "prompt": settings.model_dump(mode="json"),
        "backbone": {
            "preset": backbone.name,
            "family": backbone.family,
            "model": backbone.model,
            "weights": backbone.weights,
            "fingerprint": meta["backbone"].get("fingerprint"),
            "weight_source": meta["backbone"].get("weight_source"),
            "random_weights": _random(meta["backbone"], backbone),
            "resolves": _resolves(backbone),
        },
        "instance_encoder": None
        if instance is None
        else {
            "preset": instance.name,
            "fingerprint": meta["instance_encoder"].get("fingerprint"),
            "random_weights": _random(meta["instance_encoder"], instance),
            "resolves": _resolves(instance),
        },
        "text_encoder": meta.get("text_encoder"),
        "texts": meta.get("texts", []),
        "tile": task.tile.model_dump(mode="json"),
        "preprocessing": meta.get("preprocessing"),
        "trainable_parameters": meta.get("trainable_parameters"),
        "backbone_parameters": meta.get("backbone_parameters"),
        "metrics": meta.get("metrics"),
        "training": meta.get("training"),
        "tensors": tensors,
        "tensor_values": sum(t["numel"] for t in tensors),
        "tensors_verified": expected is not None,
        "tensors_not_verified_because": skipped,
    }


def expected_tensors(file, task, backbone, settings, instance):  # noqa: ANN001, ANN201
    """The tensors ``load_prompted_model`` would expect, as shapes on the ``meta`` device, with no weights.

    Returns:
        ``(tensors, None)``, or ``(None, reason)`` where this build cannot construct the backbone's family.
    """
    import torch

    from pathotune_cli.engine.model import PromptedModel

    try:
        bb, device = _skeleton(backbone)
        inst = _skeleton(instance)[0] if instance is not None else None
    except _FamilyMissing as exc:
        return None, str(exc)
    embeddings = None
    if settings.method == "pathotune":
        stored = file.tensors.get("ttp.text_embeddings")
        if stored is None:
            raise BadInput(
                f"{file.path}: method 'pathotune' but no stored text embeddings",
                "the file was altered; re-run `pathotune tune`",
            )
        embeddings = torch.empty(
            len(task.texts()), int(stored.shape[-1]) if stored.dim() else 1, device=device
        )
    with torch.device(device):
        model = PromptedModel(bb, settings, len(task.classes), embeddings, inst)
    return model.trained_state(), None


class _FamilyMissing(Exception):
    pass


def _skeleton(preset):  # noqa: ANN001, ANN202
    """A backbone with the preset's shapes and no weights: on ``meta``, else random-initialised on the CPU."""
    import torch

    from pathotune_cli.backbones import FAMILIES, WeightSource

    module_name, _, class_name = FAMILIES[preset.family].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise _FamilyMissing(f"backbone family '{preset.family}' is not in this build") from None
    try:
        with torch.device("meta"):
            return cls(preset, WeightSource("random")), "meta"
    except (NotImplementedError, RuntimeError):  # a constructor that copies tensor data, which meta cannot do
        pass  # built on the CPU below, with random weights
    with torch.random.fork_rng():
        return cls(preset, WeightSource("random")), "cpu"


def _resolves(preset) -> dict[str, Any]:  # noqa: ANN001
    """Where this preset's weights come from on this machine, or why they do not."""
    from pathotune_cli.backbones import resolve_weights

    try:
        return {"ok": True, "source": resolve_weights(preset).describe()}
    except PathotuneError as exc:  # MissingWeights, or a weight map that points nowhere
        return {"ok": False, "problem": exc.problem, "fix": exc.fix}


def _random(section: dict[str, Any], preset) -> bool:  # noqa: ANN001
    """Whether the model was tuned on random weights (recorded since format 1's weight_source; else the preset's)."""
    return section.get("weight_source", preset.weights) == "random"


def _section(meta: dict[str, Any], key: str, sub: str, source: str) -> Any:
    value = meta.get(key)
    if not isinstance(value, dict) or sub not in value:
        raise BadInput(
            f"{source}: metadata '{key}' lacks '{sub}'", "the file was altered; re-run `pathotune tune`"
        )
    return value[sub]

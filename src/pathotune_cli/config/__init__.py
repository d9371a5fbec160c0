"""Presets and run settings: schemas, YAML loading, ``--set`` overrides, validation with clear messages."""

from pathotune_cli.config.loader import (
    apply_overrides,
    find_preset,
    list_presets,
    load_backbone_preset,
    load_task_preset,
    preset_dirs,
)
from pathotune_cli.config.run import PromptSettings, RunConfig, TrainSettings
from pathotune_cli.config.schema import BackbonePreset, ClassSpec, TaskPreset

__all__ = [
    "BackbonePreset",
    "ClassSpec",
    "PromptSettings",
    "RunConfig",
    "TaskPreset",
    "TrainSettings",
    "apply_overrides",
    "find_preset",
    "list_presets",
    "load_backbone_preset",
    "load_task_preset",
    "preset_dirs",
]

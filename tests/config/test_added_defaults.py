"""Settings added since runs existed (stain augmentation, stain normalisation) leave a run's identity as it was:
a checkpoint or config.yaml made before them resumes when they are at their defaults, and not when they are set."""

from __future__ import annotations

import hashlib
import json

from pathotune_cli.config import RunConfig, load_backbone_preset, load_task_preset
from pathotune_cli.config.run import ADDED_DEFAULTS
from pathotune_cli.runs.tune import config_digest


def _config(**train: object) -> RunConfig:
    return RunConfig(task=load_task_preset("demo"), backbone=load_backbone_preset("tiny-random"), data="d",
                     train=train)


def _digest_before_the_keys_existed(config: RunConfig) -> str:
    data = config.model_dump(mode="json")
    for key in ("out", "device", "runtime"):
        data.pop(key)
    data["mil"].pop("slides_per_step")
    data["train"].pop("stain")
    data.pop("default_mpp")  # added with --default-mpp for slide-level tune
    for key in ("lora", "knn"):  # added with the LoRA and kNN methods
        data["prompt"].pop(key)
    for key in ("hed", "stain_matrix"):
        data["train"]["augment"].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_defaults_of_added_settings_keep_the_old_digest() -> None:
    config = _config()
    assert config_digest(config) == _digest_before_the_keys_existed(config)
    assert set(ADDED_DEFAULTS) >= {"train.augment.hed", "train.stain.method"}


def test_setting_an_added_key_changes_the_digest() -> None:
    plain = config_digest(_config())
    assert config_digest(_config(augment={"hed": 0.05})) != plain
    assert config_digest(_config(stain={"method": "macenko"})) != plain

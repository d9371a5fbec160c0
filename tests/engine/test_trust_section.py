"""The trust section of a prompt file: its tensors load with it, and tensors that disagree with it are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine import build_prompted_model, load_prompted_model, prompt_header, save_prompt_file
from pathotune_cli.engine.promptfile import write_raw
from pathotune_cli.engine.trust import CalibrationStats, ConformalStats, OodStats, TrustStats
from pathotune_cli.errors import BadInput


def trust_stats(classes: list[str]) -> TrustStats:
    return TrustStats(
        calibration=CalibrationStats(temperature=1.5, validation_images=20, nll_before=1.0, nll_after=0.9,
                                     ece_before=0.2, ece_after=0.1, brier_before=0.6, brier_after=0.5),
        conformal=ConformalStats(validation_images=20, levels=[]),
        ood=OodStats(classes=classes, fit_images=40, shrinkage=0.5, residual_variance=0.1, threshold=3.0,
                     false_flag_rate=0.05, false_flag_bound=0.048, validation_images=20),
    )


def save_with_trust(tmp_path: Path, task, preset, shapes: dict[str, tuple[int, ...]] | None = None) -> Path:
    torch.manual_seed(0)
    built = build_prompted_model(task, preset, PromptSettings(method="linear"))
    d, k = built.model.head.in_features, len(task.class_names)
    shapes = shapes or {"trust.ood.means": (k, d), "trust.ood.basis": (d, 5), "trust.ood.variances": (5,)}
    tensors = {**built.model.trained_state(), **{name: torch.rand(shape) for name, shape in shapes.items()}}
    header = prompt_header(built, task, preset, trust=trust_stats(task.class_names))
    return save_prompt_file(tmp_path / "p.safetensors", tensors, header)


def test_a_file_with_a_trust_section_loads_and_keeps_its_tensors_out_of_the_model(
    tmp_path: Path, tiny_preset, demo_task
) -> None:
    model, file = load_prompted_model(save_with_trust(tmp_path, demo_task, tiny_preset()))
    assert file.header.trust.calibration.temperature == 1.5
    assert not any(name.startswith("trust.") for name in model.state_dict())


def test_ood_tensors_of_the_wrong_shape_are_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    bad = {"trust.ood.means": (4, 7), "trust.ood.basis": (64, 5), "trust.ood.variances": (5,)}
    path = save_with_trust(tmp_path, demo_task, tiny_preset(), bad)
    with pytest.raises(BadInput, match="OOD tensors of shapes"):
        load_prompted_model(path)


def test_trust_tensors_without_their_header_section_are_refused(tmp_path: Path, tiny_preset, demo_task) -> None:
    from safetensors import safe_open

    good = save_with_trust(tmp_path, demo_task, tiny_preset())
    import json

    from pathotune_cli.engine.promptfile import META_KEY

    with safe_open(str(good), framework="pt") as handle:
        header = json.loads(handle.metadata()[META_KEY])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    header["trust"]["ood"] = None
    path = write_raw(tmp_path / "q.safetensors", tensors, header)
    with pytest.raises(BadInput, match="trust tensors"):
        load_prompted_model(path)
